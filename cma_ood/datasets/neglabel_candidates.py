"""NegLabel's candidate labels and negative-label files (pure I/O).

* :func:`read_candidates`: the WordNet candidate lists of ``txtfiles/``
  (``<lexname>.txt``, built by :mod:`cma_ood.datasets.wordnet`), read as
  NegLabel's loader reads them: one seen-set across all files, in sorted
  file order.
* :func:`read_label_file` / :func:`write_label_file`: a list of negative
  labels (``dump_labels`` / ``neg_labels_file``), or a ``.npy`` array of
  full prompts (:func:`read_prompt_array`, CMA's ``neg_label_10000.npy``).
"""
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from ..utils.checkpoint import atomic_write_text

#: label kinds: a noun (``noun_template``), an adjective (``adj_template``)
#: or a full prompt encoded verbatim (CMA's ``neg_label_10000.npy``)
NOUN, ADJ, PROMPT = 'n', 'a', 'p'


def default_txt_dir() -> Path:
    """The candidate lists shipped with cma_ood.

    Tried in order: ``txtfiles/`` next to the ``cma_ood`` package (source
    checkouts and editable installs) and ``cma_ood/.mim/txtfiles`` (regular
    installs, where setup.py copies it).

    Raises:
        FileNotFoundError: naming the paths tried.
    """
    pkg = Path(__file__).resolve().parents[1]  # cma_ood/
    tried = [pkg.parent / 'txtfiles', pkg / '.mim' / 'txtfiles']
    for path in tried:
        if path.is_dir():
            return path
    raise FileNotFoundError(
        'NegLabel candidate lists not found; tried ' +
        ', '.join(map(str, tried)) + '. Pass txt_dir=... to NegLabelScorer')


def lexname_kind(lexname: str) -> str:
    """``'n'`` for ``noun.*`` files, ``'a'`` for ``adj.*`` files."""
    prefix = lexname.split('.', 1)[0]
    if prefix == 'noun':
        return NOUN
    if prefix == 'adj':
        return ADJ
    raise ValueError(f'NegLabel uses noun.* and adj.* candidate files only, '
                     f'got {lexname!r}')


def candidate_file_order(lexnames: Sequence[str]) -> List[str]:
    """The order in which candidate files are read: sorted by name.

    NegLabel's loader read ``os.listdir(txt_dir)``, whose order depends on
    the file system; sorting is the documented deterministic choice. It
    puts the ``adj.*`` files before the ``noun.*`` files (and
    ``noun.Tops`` first among the nouns: upper case sorts first).
    """
    return sorted(lexnames)


def read_candidates(txt_dir: Union[str, Path],
                    lexnames: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Read the noun and adjective candidates of ``lexnames``.

    As NegLabel's ``CLIPScalableClassifier`` loader: the files are read in
    one order (:func:`candidate_file_order`, sorted by name) with **one**
    seen-set across all of them, so a word is kept once, in the first file
    that lists it, whether that is a noun or an adjective file. Each
    ``<txt_dir>/<lexname>.txt`` holds one label per line; blank lines are
    skipped and surrounding whitespace stripped.

    Returns:
        ``(nouns, adjectives)``: the words of the ``noun.*`` and ``adj.*``
        files in reading order, disjoint.

    Raises:
        FileNotFoundError: naming every missing file.
    """
    txt_dir = Path(txt_dir)
    if not txt_dir.is_dir():
        raise FileNotFoundError(
            f'NegLabel candidate directory (txt_dir) not found: {txt_dir}; '
            'build it with tools/build_wordnet_txtfiles.py or pass '
            'txt_dir=...')
    order = candidate_file_order(lexnames)
    kinds = [lexname_kind(name) for name in order]
    paths = [txt_dir / f'{name}.txt' for name in order]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            'NegLabel candidate file(s) not found: ' + ', '.join(missing))
    seen = set()
    pools: Dict[str, List[str]] = {NOUN: [], ADJ: []}
    for kind, path in zip(kinds, paths):
        for line in path.read_text(encoding='utf-8').splitlines():
            label = line.strip()
            if label and label not in seen:
                seen.add(label)
                pools[kind].append(label)
    return pools[NOUN], pools[ADJ]


def read_prompt_array(path: Union[str, Path]) -> List[str]:
    """Read a numpy ``.npy`` array of full prompt strings, such as CMA's
    ``Neglabel/neg_label_10000.npy`` (10,000 prompts, "This is a X photo"
    then "The nice X"), loaded without pickle.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file, unless it holds a non-empty 1-D array
            of non-empty strings (numpy ``str`` or UTF-8 ``bytes``).
    """
    import numpy as np
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'NegLabel prompt array not found: {path}')
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(
            f'NegLabel: {path} is not a numpy .npy array of strings '
            f'({type(err).__name__}: {err})') from err
    if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.size == 0 \
            or arr.dtype.kind not in 'US':
        what = (f'an array of dtype {arr.dtype} and shape {arr.shape}'
                if isinstance(arr, np.ndarray) else type(arr).__name__)
        raise ValueError(
            f'NegLabel: {path} holds {what}; expected a non-empty 1-D array '
            'of prompt strings (e.g. CMA\'s neg_label_10000.npy)')
    prompts = [
        v.decode('utf-8') if isinstance(v, bytes) else str(v)
        for v in arr.tolist()
    ]
    empty = [i for i, v in enumerate(prompts) if not v.strip()]
    if empty:
        raise ValueError(f'NegLabel: {path} holds {len(empty)} empty '
                         f'prompt(s), e.g. at index {empty[0]}')
    return prompts


def read_label_file(path: Union[str, Path]) -> Tuple[List[str], List[str]]:
    """Read a negative-label file: ``(labels, kinds)``.

    A ``.npy`` file is an array of full prompts (:func:`read_prompt_array`),
    each of kind ``'p'`` (encoded verbatim). Any other file is text, one
    label per line: ``n<TAB>label`` (a noun, prompted with the noun
    template), ``a<TAB>label`` (an adjective), ``p<TAB>prompt`` (a full
    prompt) or a plain ``label`` (a noun). Blank lines are skipped. This is
    the format ``dump_labels`` writes.
    """
    path = Path(path)
    if path.suffix == '.npy':
        prompts = read_prompt_array(path)
        return prompts, [PROMPT] * len(prompts)
    if not path.is_file():
        raise FileNotFoundError(f'NegLabel label file not found: {path}')
    labels, kinds = [], []
    for line in path.read_text(encoding='utf-8').splitlines():
        tag, sep, rest = line.partition('\t')
        if sep and tag in (NOUN, ADJ, PROMPT):
            kind, label = tag, rest.strip()
        else:
            kind, label = NOUN, line.strip()
        if label:
            labels.append(label)
            kinds.append(kind)
    if not labels:
        raise ValueError(f'NegLabel label file {path} holds no labels')
    return labels, kinds


def write_label_file(path: Union[str, Path], labels: Sequence[str],
                     kinds: Sequence[str]) -> None:
    """Write ``kind<TAB>label`` lines readable by :func:`read_label_file`
    (atomically: a temporary file then ``os.replace``)."""
    atomic_write_text(
        str(path), ''.join(f'{k}\t{lab}\n' for lab, k in zip(labels, kinds)))
