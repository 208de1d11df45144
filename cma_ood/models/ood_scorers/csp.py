"""CSP (NeurIPS 2024) as a registered OoD scorer: NegLabel with the
conjugated semantic pool and prompt ensembles.

:class:`CSPScorer` is a :class:`~.neglabel.NegLabelScorer` whose labels
are embedded and chosen as CSP's published code does
(``mmcls/models/classifiers/multi_modal.py``, ``class_names.py``,
``custom_config/clip-ViT-B16.py`` of ``MengyuanChen21/NeurIPS2024-CSP``):
the rules are the pure functions of :mod:`.functional.csp`; mining,
caching, grouping, seed repeats and top negatives are NegLabel's.
"""
from typing import List, Optional, Sequence, Tuple

from mmpretrain.registry import MODELS

from ...datasets.neglabel_candidates import ADJ, NOUN, PROMPT
from ...datasets.wordnet import DEFAULT_LEXNAMES
from ..utils.prompts import check_template
from .base import ScorerContext
from .functional.csp import (CSP_EXCLUDED_LEXNAMES, CSP_PHRASE_TEMPLATES,
                             CSP_SUPERCLASSES, CSP_TEMPLATES,
                             conjugated_phrases)
from .neglabel import _ID, NegLabelScorer

#: CSP's candidate files: NegLabel's without noun.person, noun.quantity,
#: noun.group and adj.pert (21 noun files, adj.all, adj.ppl)
CSP_LEXNAMES = tuple(name for name in DEFAULT_LEXNAMES
                     if name not in CSP_EXCLUDED_LEXNAMES)


def _templates(templates: Sequence[str], what: str) -> Tuple[str, ...]:
    templates = tuple(templates)
    if not templates:
        raise ValueError(f'{what} must hold at least one template')
    for template in templates:
        check_template(template, what)
    return templates


@MODELS.register_module()
class CSPScorer(NegLabelScorer):
    """CSP: NegLabel's score over nouns and conjugated phrases, with prompt
    ensembles.

    :meth:`prepare` reads the candidate files (one seen-set across them, in
    sorted order, as :class:`NegLabelScorer`), turns the adjectives into
    conjugated phrases "{adjective} {superclass}" (one of ``superclasses``
    drawn per adjective in reading order by ``random.Random(draw_seed)``,
    :func:`~.functional.csp.conjugated_phrases`), and embeds every label
    by a prompt ensemble: the ID classes with ``id_templates``, the nouns
    with ``noun_templates``, the phrases with ``phrase_templates``; a
    label's prompts' **unnormalised** embeddings are averaged, then
    normalised. All prompts go through one text-encoder call (8 x ~46,500
    nouns + 4 x ~10,000 phrases + 8 x C ID prompts for ImageNet: ~420,000
    prompts, cached). Mining is NegLabel's per pool (``percentile``-quantile
    affinity, the ``ratio`` least ID-like kept) after giving affinity 1.0
    to every candidate whose largest cosine to an ID class exceeds
    ``max_cos``; the kept list is the nouns, then the phrases. The score
    is NegLabel's grouped score with the **ensemble** ID embeddings (CSP's
    ``pos_sim`` is computed with them, not with the classifier's ID
    prompts).

    Args:
        txt_dir (str, optional): directory of the candidate lists (default:
            the shipped ``txtfiles/``).
        lexnames (Sequence[str]): candidate files; default CSP's 23
            (:data:`CSP_LEXNAMES`).
        noun_templates (Sequence[str]): the noun ensemble (CSP's 8).
        phrase_templates (Sequence[str]): the phrase ensemble (CSP's 4).
        id_templates (Sequence[str], optional): the ID ensemble (CSP's 8,
            the noun ones); ``None``: the classifier's ID prompts
            (``test_template``) instead, as NegLabel.
        superclasses (Sequence[str]): the words drawn (CSP's 14, in its
            order).
        draw_seed (int): seed of the superclass draw (CSP: 0).
        max_cos (float, optional): exclusion threshold (CSP: 0.95);
            ``None``: off.
        **kwargs: the options of :class:`NegLabelScorer` (``percentile``,
            ``ratio``, ``temperature``, ``ngroup``, ``seed``,
            ``seed_repeats``, ``seeds``, ``top_negatives``, ``cache_dir``,
            ``neg_labels_file``, ``dump_labels``, ``batch_size``,
            ``show_progress``, ``cache_max_bytes``, ``at_validation``,
            ``name``), with NegLabel's defaults, which are CSP's (0.95,
            0.15, 0.01, 100, 0). The cache lives in ``csp_<key>.pt`` files
            (default folder ``~/.cache/cma_ood/csp``); label files hold
            ``n`` nouns and ``a`` phrases (encoded with the noun and
            phrase ensembles).
    """
    default_name = 'CSP'
    log_name = 'CSP'
    cache_prefix = 'csp'
    second_pool_name = 'conjugated phrase'

    def __init__(self,
                 txt_dir: Optional[str] = None,
                 lexnames: Sequence[str] = CSP_LEXNAMES,
                 noun_templates: Sequence[str] = CSP_TEMPLATES,
                 phrase_templates: Sequence[str] = CSP_PHRASE_TEMPLATES,
                 id_templates: Optional[Sequence[str]] = CSP_TEMPLATES,
                 superclasses: Sequence[str] = CSP_SUPERCLASSES,
                 draw_seed: int = 0,
                 max_cos: Optional[float] = 0.95,
                 **kwargs):
        for single in ('noun_template', 'adj_template'):
            if single in kwargs:
                raise TypeError(
                    f'CSPScorer has no {single!r}: use noun_templates / '
                    'phrase_templates (prompt ensembles)')
        super().__init__(txt_dir=txt_dir, lexnames=lexnames, **kwargs)
        self.noun_templates = _templates(noun_templates, 'noun_templates')
        self.phrase_templates = _templates(phrase_templates,
                                           'phrase_templates')
        self.id_templates = None if id_templates is None else _templates(
            id_templates, 'id_templates')
        self.superclasses = tuple(superclasses)
        if not self.superclasses or not all(
                isinstance(w, str) and w.strip() for w in self.superclasses):
            raise ValueError('superclasses must be non-empty words, got '
                             f'{superclasses!r}')
        if isinstance(draw_seed, bool) or not isinstance(draw_seed, int):
            raise ValueError(f'draw_seed must be an int, got {draw_seed!r}')
        self.draw_seed = draw_seed
        if max_cos is not None and not -1.0 <= max_cos <= 1.0:
            raise ValueError(f'max_cos must be in [-1, 1] or None, got '
                             f'{max_cos}')
        self.max_cos = None if max_cos is None else float(max_cos)

    def templates_for(self, kind: str) -> Tuple[str, ...]:
        """The ensemble of a label kind: nouns ``n``, conjugated phrases
        ``a``, ID classes; full prompts ``p`` are used verbatim."""
        return {NOUN: self.noun_templates, ADJ: self.phrase_templates,
                _ID: self.id_templates, PROMPT: ('{}', )}[kind]

    @property
    def has_own_id_embeds(self) -> bool:
        return self.id_templates is not None

    def candidate_pools(self, nouns: Sequence[str], adjs: Sequence[str]
                        ) -> Tuple[List[str], List[str]]:
        """The nouns and the conjugated phrases of the adjectives."""
        return list(nouns), conjugated_phrases(adjs, self.superclasses,
                                               self.draw_seed)

    def cache_meta(self, context: ScorerContext, nouns: Sequence[str],
                   adjs: Sequence[str]) -> dict:
        meta = super().cache_meta(context, nouns, adjs)
        del meta['noun_template'], meta['adj_template']
        if self.id_templates is not None:
            # the classifier's ID prompts play no part then
            del meta['id_template']
        meta.update(
            method='CSP',
            noun_templates=list(self.noun_templates),
            phrase_templates=list(self.phrase_templates),
            id_templates=None
            if self.id_templates is None else list(self.id_templates),
            superclasses=list(self.superclasses),
            draw_seed=self.draw_seed,
            max_cos=self.max_cos)
        return meta
