"""CSP (Chen et al., NeurIPS 2024): the conjugated semantic pool and the
prompt ensembles of its labels.

Functional core (pure functions, no module state). CSP is NegLabel
(:mod:`.neglabel`) with three changes, all in how the labels are embedded
and chosen (published code: ``mmcls/models/classifiers/multi_modal.py``
and ``class_names.py`` of ``MengyuanChen21/NeurIPS2024-CSP``):

- the adjective pool is replaced by *conjugated* phrases, "{adjective}
  {superclass}", one superclass word drawn per adjective
  (:func:`conjugated_phrases`);
- ID classes and noun candidates are embedded by an ensemble of 8 prompt
  templates (:data:`CSP_TEMPLATES`), the phrases by 4
  (:data:`CSP_PHRASE_TEMPLATES`): the **unnormalised** text embeddings of a
  label's prompts are averaged, then normalised (:func:`ensemble_prompts`,
  :func:`ensemble_embeddings`);
- mining excludes candidates whose largest cosine to an ID class exceeds
  0.95 (``max_cos`` of :func:`~.neglabel.mine_negative_labels`).

The score is NegLabel's grouped score (:func:`~.neglabel.neglabel_score`).
"""
import random
from typing import List, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ...utils.checks import check_matrix

#: CSP's ``preset_noun_prompt_templates``: the ensemble of the ID classes
#: and of the noun candidates (in this order)
CSP_TEMPLATES = (
    'a close-up photo of the nice {}.',
    'a photo with the nice {}.',
    'a good photo with the nice {}.',
    'a photo of the nice {}.',
    '{}',
    'the {}',
    'the good {}',
    'the nice {}',
)
#: CSP's superclass words (its ``csp_templates``, ``'{} environment'``,
#: ..., in the published order: the seeded draw indexes this list)
CSP_SUPERCLASSES = (
    'environment', 'space', 'object', 'scene', 'place', 'item', 'area',
    'view', 'thing', 'pattern', 'structure', 'landscape', 'vista',
    'creature',
)
#: CSP's ``preset_adj_prompt_templates``: the ensemble of a conjugated
#: phrase
CSP_PHRASE_TEMPLATES = (
    '{}',
    'a nice photo of {}',
    'a good photo of {}',
    'a close-up photo of {}',
)
#: candidate files NegLabel uses and CSP leaves out (its ``txt_exclude``)
CSP_EXCLUDED_LEXNAMES = ('noun.person', 'noun.quantity', 'noun.group',
                         'adj.pert')


def conjugated_phrases(adjectives: Sequence[str],
                       superclasses: Sequence[str] = CSP_SUPERCLASSES,
                       seed: int = 0) -> List[str]:
    """CSP's conjugated semantic pool: one phrase per adjective.

    A ``random.Random(seed)`` (the stream of CSP's ``random.seed(seed)``)
    draws, for each adjective in the given (reading) order, **one**
    superclass with ``choice(superclasses)``; the phrase is
    ``f'{adjective} {superclass}'`` (CSP formats ``'{} <superclass>'``).
    The draw depends on the adjectives' order and count only, so the
    adjectives must be in the order they were read, after the
    de-duplication across files (skipped words draw nothing).

    Args:
        adjectives: the adjective candidates, in reading order.
        superclasses: the words drawn from (CSP's 14, in its order).
        seed: seed of the draw (CSP: 0).

    Returns:
        the ``len(adjectives)`` phrases, in the adjectives' order.
    """
    superclasses = list(superclasses)
    if not superclasses:
        raise ValueError('superclasses must hold at least one word')
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f'seed must be an int, got {seed!r}')
    rng = random.Random(seed)
    return [f'{adj} {rng.choice(superclasses)}' for adj in adjectives]


def ensemble_prompts(labels: Sequence[str],
                     templates: Sequence[str]) -> List[str]:
    """The prompts of a template ensemble, label-major:
    ``[t.format(label) for label in labels for t in templates]`` (label
    ``i``'s prompts are rows ``i * T ... i * T + T - 1``)."""
    templates = list(templates)
    if not templates:
        raise ValueError('templates must hold at least one template')
    return [t.format(label) for label in labels for t in templates]


def ensemble_embeddings(raw: Tensor,
                        counts: Union[int, Sequence[int], Tensor]) -> Tensor:
    """Average each label's **unnormalised** prompt embeddings, then
    L2-normalise (CSP's ensembles; CLIP's own recipe normalises each
    prompt first, this one does not).

    Args:
        raw: (P, D) raw text embeddings, label-major (a label's prompts
            are consecutive rows, as :func:`ensemble_prompts` lays them
            out).
        counts: prompts per label: an int T (every label, ``P = N * T``)
            or N ints summing to P.

    Returns:
        (N, D) unit-norm embeddings, float32 (float64 if ``raw`` is).
    """
    check_matrix(raw, 'raw', '(num_prompts, D)')
    dtype = torch.float64 if raw.dtype == torch.float64 else torch.float32
    raw = raw.to(dtype)
    if isinstance(counts, int) and not isinstance(counts, bool):
        if counts < 1 or raw.shape[0] % counts:
            raise ValueError(
                f'{raw.shape[0]} prompt embeddings cannot be split into '
                f'groups of counts={counts}')
        mean = raw.view(-1, counts, raw.shape[1]).mean(dim=1)
        return F.normalize(mean, dim=-1)
    counts = [int(c) for c in counts]
    if any(c < 1 for c in counts):
        raise ValueError('counts must be positive ints, one per label')
    if sum(counts) != raw.shape[0]:
        raise ValueError(f'counts sum to {sum(counts)} but raw holds '
                         f'{raw.shape[0]} prompt embeddings')
    # runs of labels with equal counts (the ID, noun and phrase blocks):
    # a reshape and mean each, deterministic on every device
    means, row, start = [], 0, 0
    while start < len(counts):
        stop = start
        while stop < len(counts) and counts[stop] == counts[start]:
            stop += 1
        size = (stop - start) * counts[start]
        means.append(raw[row:row + size].view(
            stop - start, counts[start], raw.shape[1]).mean(dim=1))
        row, start = row + size, stop
    if not means:
        return raw.new_zeros(0, raw.shape[1])
    return F.normalize(torch.cat(means), dim=-1)
