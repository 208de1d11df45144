"""WordNet 3.0 candidate label lists for NegLabel.

NegLabel (Jiang et al., ICLR 2024) mines its negative labels from WordNet
words grouped by lexicographer file (``noun.artifact``, ``adj.all``, ...).
This module rebuilds those candidate lists from a local WordNet 3.0 database
(Debian's ``wordnet-base`` package installs it in ``/usr/share/wordnet``) and
reads it with nltk's :class:`~nltk.corpus.reader.wordnet.WordNetCorpusReader`.

Rules (chosen to reproduce the published list sizes, see
``txtfiles/README.md`` for the measured counts):

* one label per synset: the synset's *first* lemma (the first word of its
  line in ``data.<pos>``), lower-cased, ``_`` turned into a space; nltk
  already strips adjective syntactic markers such as ``(p)``;
* synsets are taken in ``data.<pos>`` byte-offset order, i.e. the order
  of the lexicographer file;
* duplicates are removed *within* each lexicographer file, keeping the
  first occurrence. The published lists are not de-duplicated across files
  (doing so loses about 12% of the labels, e.g. 36% of ``noun.event``);
  ``dedup_across_files=True`` gives that variant;
* adjective satellites (``ss_type`` ``s``) belong to their cluster's file
  (``adj.all``) and are kept. The published ``adj.all`` list lacks the
  *first head synset of every adjective cluster* (a property of how it was
  extracted from the cluster-structured lexicographer source); with
  ``drop_first_cluster_heads=True`` (the default) that is reproduced:
  clusters are the groups of ``adj.all`` head synsets joined by antonym
  pointers, and the head with the lowest offset in each group is skipped
  (its word is still listed when another kept synset starts with it).
  Without it ``adj.all`` has 10,994 labels instead of the published 10,007.

nltk needs a ``lexnames`` table next to the database files, which Debian
does not ship (it is only documented in the lexnames(5WN) man page). The
table is the fixed WordNet 3.0 list :data:`WORDNET_LEXNAMES`, written by
:func:`write_lexnames_table`; a constant is used rather than parsing the man
page so that the build works where man pages are not installed.
"""
import logging
import shutil
import tempfile
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence

from ..utils.checkpoint import atomic_write_text

logger = logging.getLogger(__name__)

#: WordNet 3.0 lexicographer files, indexed by file number, with the
#: syntactic-category number used in the ``lexnames`` table
#: (1 noun, 2 verb, 3 adjective, 4 adverb), as listed in lexnames(5WN).
WORDNET_LEXNAMES = (
    ('adj.all', 3), ('adj.pert', 3), ('adv.all', 4), ('noun.Tops', 1),
    ('noun.act', 1), ('noun.animal', 1), ('noun.artifact', 1),
    ('noun.attribute', 1), ('noun.body', 1), ('noun.cognition', 1),
    ('noun.communication', 1), ('noun.event', 1), ('noun.feeling', 1),
    ('noun.food', 1), ('noun.group', 1), ('noun.location', 1),
    ('noun.motive', 1), ('noun.object', 1), ('noun.person', 1),
    ('noun.phenomenon', 1), ('noun.plant', 1), ('noun.possession', 1),
    ('noun.process', 1), ('noun.quantity', 1), ('noun.relation', 1),
    ('noun.shape', 1), ('noun.state', 1), ('noun.substance', 1),
    ('noun.time', 1), ('verb.body', 2), ('verb.change', 2),
    ('verb.cognition', 2), ('verb.communication', 2),
    ('verb.competition', 2), ('verb.consumption', 2), ('verb.contact', 2),
    ('verb.creation', 2), ('verb.emotion', 2), ('verb.motion', 2),
    ('verb.perception', 2), ('verb.possession', 2), ('verb.social', 2),
    ('verb.stative', 2), ('verb.weather', 2), ('adj.ppl', 3),
)

#: Noun files used by NegLabel (all nouns except noun.animal and noun.food).
NOUN_LEXNAMES = (
    'noun.Tops', 'noun.act', 'noun.artifact', 'noun.attribute', 'noun.body',
    'noun.cognition', 'noun.communication', 'noun.event', 'noun.feeling',
    'noun.group', 'noun.location', 'noun.motive', 'noun.object',
    'noun.person', 'noun.phenomenon', 'noun.plant', 'noun.possession',
    'noun.process', 'noun.quantity', 'noun.relation', 'noun.shape',
    'noun.state', 'noun.substance', 'noun.time')
#: Adjective files used by NegLabel.
ADJ_LEXNAMES = ('adj.all', 'adj.pert', 'adj.ppl')
#: The published NegLabel set: nouns first, then adjectives.
DEFAULT_LEXNAMES = NOUN_LEXNAMES + ADJ_LEXNAMES

#: Line counts of the candidate lists published with NegLabel (its
#: ``txtfiles/<lexname>.txt``; 79,455 lines in all). They were made from a
#: slightly different WordNet than Debian's 3.0, so a rebuild only matches
#: them approximately.
PUBLISHED_LINE_COUNTS = {
    'noun.Tops': 50, 'noun.act': 5897, 'noun.artifact': 10345,
    'noun.attribute': 2729, 'noun.body': 1978, 'noun.cognition': 2775,
    'noun.communication': 5090, 'noun.event': 998, 'noun.feeling': 413,
    'noun.group': 2407, 'noun.location': 2959, 'noun.motive': 41,
    'noun.object': 1501, 'noun.person': 9619, 'noun.phenomenon': 629,
    'noun.plant': 7631, 'noun.possession': 998, 'noun.process': 719,
    'noun.quantity': 1195, 'noun.relation': 411, 'noun.shape': 331,
    'noun.state': 3413, 'noun.substance': 2926, 'noun.time': 933,
    'adj.all': 10007, 'adj.pert': 3400, 'adj.ppl': 60,
}

#: Lexicographer files organised in adjective clusters (head synsets with
#: antonyms and their satellites); see ``drop_first_cluster_heads``.
ADJ_CLUSTER_LEXNAMES = ('adj.all', )

_POS_BY_PREFIX = {'noun': 'n', 'verb': 'v', 'adj': 'a', 'adv': 'r'}
_FILE_SUFFIX = {'n': 'noun', 'v': 'verb', 'a': 'adj', 'r': 'adv'}
_LEXNAME_SET = frozenset(name for name, _ in WORDNET_LEXNAMES)

#: Files nltk's reader opens whatever is asked of it (``data.adj`` is
#: scanned for satellites when the reader is created).
_BASE_FILES = ('index.noun', 'index.verb', 'index.adj', 'index.adv',
               'noun.exc', 'verb.exc', 'adj.exc', 'adv.exc', 'data.adj')

_MISSING_HINT = ('WordNet 3.0 database files (data.*, index.*, *.exc) come '
                 "with Debian's `wordnet-base` package (apt-get install "
                 'wordnet-base), which puts them in /usr/share/wordnet.')


def lexname_pos(lexname: str) -> str:
    """nltk part-of-speech letter (``n``, ``v``, ``a``, ``r``) of a
    lexicographer file name such as ``noun.act``.

    Raises:
        ValueError: if ``lexname`` is not a WordNet 3.0 lexicographer file.
    """
    if lexname not in _LEXNAME_SET:
        raise ValueError(f'unknown WordNet lexicographer file {lexname!r}; '
                         f'expected one of {sorted(_LEXNAME_SET)}')
    return _POS_BY_PREFIX[lexname.split('.', 1)[0]]


def is_noun_lexname(lexname: str) -> bool:
    """Whether ``lexname`` is a noun lexicographer file."""
    return lexname_pos(lexname) == 'n'


def is_adjective_lexname(lexname: str) -> bool:
    """Whether ``lexname`` is an adjective lexicographer file."""
    return lexname_pos(lexname) == 'a'


def normalize_label(lemma_name: str) -> str:
    """Label text of a WordNet lemma: lower-cased, ``_`` -> space."""
    return lemma_name.lower().replace('_', ' ')


def write_lexnames_table(path) -> Path:
    """Write WordNet 3.0's 45-line ``lexnames`` table to ``path``.

    Each line is ``NN<TAB>name<TAB>category`` as in lexnames(5WN), e.g.
    ``00\\tadj.all\\t3``. Returns the path.
    """
    path = Path(path)
    lines = [f'{i:02d}\t{name}\t{cat}\n'
             for i, (name, cat) in enumerate(WORDNET_LEXNAMES)]
    path.write_text(''.join(lines), encoding='utf-8')
    return path


def required_wordnet_files(lexnames: Iterable[str]) -> List[str]:
    """Database files needed to build lists for ``lexnames``."""
    files = list(_BASE_FILES)
    for lexname in lexnames:
        data = f'data.{_FILE_SUFFIX[lexname_pos(lexname)]}'
        if data not in files:
            files.append(data)
    return files


def check_wordnet_dir(wordnet_dir, lexnames: Iterable[str] = DEFAULT_LEXNAMES
                      ) -> Path:
    """Check that ``wordnet_dir`` holds the files needed for ``lexnames``.

    Raises:
        FileNotFoundError: naming the missing directory or file(s) and the
            Debian package that provides them.
    """
    root = Path(wordnet_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f'WordNet directory not found: {root}. {_MISSING_HINT}')
    missing = [str(root / name) for name in required_wordnet_files(lexnames)
               if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"missing WordNet file(s): {', '.join(missing)}. {_MISSING_HINT}")
    return root


def stage_wordnet_dir(wordnet_dir, dest,
                      lexnames: Iterable[str] = DEFAULT_LEXNAMES) -> Path:
    """Copy the needed database files to ``dest`` and add ``lexnames``.

    Files are copied, not linked: nltk (>= 3.9) refuses to open files whose
    real path is outside its allowed data roots, and a symlink would resolve
    back to ``wordnet_dir``.
    """
    lexnames = list(lexnames)
    src = check_wordnet_dir(wordnet_dir, lexnames)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in required_wordnet_files(lexnames):
        shutil.copyfile(src / name, dest / name)
    write_lexnames_table(dest / 'lexnames')
    return dest


def _reader_class():
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class _EnglishWordNetReader(WordNetCorpusReader):
        """nltk's reader without the Open Multilingual WordNet mapping.

        On a database whose version is not nltk's own ``wordnet`` corpus,
        the stock reader maps sense keys against that corpus at start-up,
        which needs ``nltk.download('wordnet')``. English lemmas need none
        of it.
        """

        def map_wn(self, version='wordnet'):
            return None

    return _EnglishWordNetReader


@contextmanager
def _allowed_nltk_root(root: Path) -> Iterator[None]:
    """Let nltk open files under ``root`` (nltk only reads from its data
    path, or from a private temp dir) for the duration of the block."""
    import nltk.data
    entry = str(root)
    nltk.data.path.append(entry)
    try:
        yield
    finally:
        nltk.data.path.remove(entry)


@contextmanager
def open_wordnet(wordnet_dir, lexnames: Iterable[str] = DEFAULT_LEXNAMES,
                 work_dir=None):
    """Context manager giving an nltk ``WordNetCorpusReader`` on a WordNet
    3.0 database directory.

    The needed files are staged with a generated ``lexnames`` table into
    ``work_dir`` (kept afterwards) or into a temporary directory (removed).
    """
    lexnames = list(lexnames)
    with ExitStack() as stack:
        if work_dir is None:
            work_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix='wordnet-'))
        root = Path(work_dir).resolve()
        stage_wordnet_dir(wordnet_dir, root, lexnames)
        logger.info('staged WordNet files from %s in %s', wordnet_dir, root)
        stack.enter_context(_allowed_nltk_root(root))
        with warnings.catch_warnings():
            # omw_reader=None: nltk warns that multilingual lookups are
            # unavailable, which is intended here.
            warnings.filterwarnings(
                'ignore', message='.*multilingual functions.*')
            reader = _reader_class()(str(root), None)
        yield reader


def _first_cluster_heads(synsets: Sequence) -> set:
    """Offsets of the first head synset (lowest offset) of each adjective
    cluster, clusters being head synsets joined by antonym pointers."""
    heads = {s.offset(): s for s in synsets if s.pos() == 'a'}
    parent = {off: off for off in heads}

    def find(off):
        while parent[off] != off:
            parent[off] = parent[parent[off]]
            off = parent[off]
        return off

    for off, synset in heads.items():
        for lemma in synset.lemmas():
            for antonym in lemma.antonyms():
                other = antonym.synset().offset()
                if other in heads:
                    a, b = find(off), find(other)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
    # Union by minimum keeps every root at the cluster's lowest offset.
    return {find(off) for off in heads}


def candidate_lists_from_reader(
        reader,
        lexnames: Sequence[str] = DEFAULT_LEXNAMES,
        dedup_across_files: bool = False,
        drop_first_cluster_heads: bool = True) -> Dict[str, List[str]]:
    """Build the label list of each lexicographer file from an nltk reader.

    See the module docstring for the rules. Returns ``{lexname: labels}``
    in the order of ``lexnames``.
    """
    lexnames = list(lexnames)
    if len(set(lexnames)) != len(lexnames):
        raise ValueError(f'duplicate lexicographer files in {lexnames}')
    wanted = set(lexnames)
    by_file: Dict[str, list] = {name: [] for name in lexnames}
    for pos in dict.fromkeys(lexname_pos(name) for name in lexnames):
        # all_synsets yields data-file (offset) order; for 'a' it includes
        # the satellites, which carry their cluster's file number.
        for synset in reader.all_synsets(pos):
            if synset.lexname() in wanted:
                by_file[synset.lexname()].append(synset)

    seen_any: set = set()
    lists: Dict[str, List[str]] = {}
    for name in lexnames:
        synsets = by_file[name]
        skip = set()
        if drop_first_cluster_heads and name in ADJ_CLUSTER_LEXNAMES:
            skip = _first_cluster_heads(synsets)
        seen = seen_any if dedup_across_files else set()
        labels = []
        for synset in synsets:
            if synset.offset() in skip:
                continue
            label = normalize_label(synset.lemmas()[0].name())
            if label not in seen:
                seen.add(label)
                labels.append(label)
        lists[name] = labels
        logger.info('%s: %d synsets -> %d labels', name, len(synsets),
                    len(labels))
    return lists


def build_candidate_lists(
        wordnet_dir,
        lexnames: Sequence[str] = DEFAULT_LEXNAMES,
        dedup_across_files: bool = False,
        drop_first_cluster_heads: bool = True,
        work_dir=None) -> Dict[str, List[str]]:
    """Build NegLabel's candidate label lists from a WordNet 3.0 directory.

    Args:
        wordnet_dir: directory with WordNet 3.0's ``data.*``, ``index.*``
            and ``*.exc`` files (Debian: ``/usr/share/wordnet``).
        lexnames: lexicographer files to build, in output order.
        dedup_across_files: also drop labels already listed by an earlier
            file of ``lexnames`` (not what the published lists do).
        drop_first_cluster_heads: skip the first head synset of each
            ``adj.all`` cluster, as the published list does.
        work_dir: where to stage the files for nltk; a temporary
            directory when ``None``.

    Returns:
        ``{lexname: [label, ...]}`` in the order of ``lexnames``.
    """
    lexnames = list(lexnames)
    for name in lexnames:
        lexname_pos(name)  # validate before touching the file system
    with open_wordnet(wordnet_dir, lexnames, work_dir) as reader:
        return candidate_lists_from_reader(
            reader, lexnames, dedup_across_files=dedup_across_files,
            drop_first_cluster_heads=drop_first_cluster_heads)


def write_candidate_lists(lists: Mapping[str, Sequence[str]],
                          out_dir) -> List[Path]:
    """Write ``out_dir/<lexname>.txt`` (UTF-8, one label per line, trailing
    newline) for each list; returns the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, labels in lists.items():
        bad = [label for label in labels if not label or '\n' in label]
        if bad:
            raise ValueError(f'{name}: labels must be non-empty single '
                             f'lines, got {bad[:3]!r}')
        path = out / f'{name}.txt'
        text = ''.join(f'{label}\n' for label in labels)
        atomic_write_text(str(path), text)
        paths.append(path)
    return paths


def read_candidate_list(path) -> List[str]:
    """Read a ``<lexname>.txt`` list written by :func:`write_candidate_lists`."""
    text = Path(path).read_text(encoding='utf-8')
    return [line for line in text.split('\n') if line]


def line_count_report(lists: Mapping[str, Sequence[str]],
                      published: Optional[Mapping[str, int]] = None
                      ) -> List[tuple]:
    """``(lexname, count, published_count or None, relative_diff or None)``
    rows comparing list sizes with :data:`PUBLISHED_LINE_COUNTS`."""
    published = PUBLISHED_LINE_COUNTS if published is None else published
    rows = []
    for name, labels in lists.items():
        ref = published.get(name)
        rel = None if not ref else (len(labels) - ref) / ref
        rows.append((name, len(labels), ref, rel))
    return rows
