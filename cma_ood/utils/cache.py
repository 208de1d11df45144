"""Size-bounded on-disk caches: least-recently-used files are evicted.

Used by the NegLabel mining cache (``NegLabelScorer``). A cache is a
directory of files named by content keys; a file is "used" when it is
written or read (:func:`mark_used` refreshes its modification time), and
:func:`prune_cache` removes the least recently used files until the
directory's matching files fit in ``max_bytes``.
"""
import logging
import os
import os.path as osp
from pathlib import Path
from typing import Iterable, List, Sequence, Union

from mmengine.logging import print_log

PathLike = Union[str, Path]

#: environment variable overriding the cma_ood cache root (documented user
#: override; default ``~/.cache/cma_ood``)
CACHE_ENV_VAR = 'CMA_OOD_CACHE'


def default_cache_dir(name: str) -> Path:
    """``$CMA_OOD_CACHE/<name>``, else ``~/.cache/cma_ood/<name>``: the
    folder of one cache (``neglabel``: mined negatives and token ids,
    ``features``: extracted features)."""
    root = os.environ.get(CACHE_ENV_VAR) or osp.join('~', '.cache', 'cma_ood')
    return Path(osp.expanduser(root)) / name


def mark_used(path: PathLike) -> None:
    """Record a read of ``path`` (its mtime becomes now); ignores errors
    (a read-only cache still works, it only evicts by write time)."""
    try:
        os.utime(path)
    except OSError:
        pass


def prune_cache(directory: PathLike,
                patterns: Sequence[str],
                max_bytes: int,
                keep: Iterable[PathLike] = ()) -> List[Path]:
    """Delete the least recently used files of ``directory`` matching any
    of the glob ``patterns`` until their total size is at most
    ``max_bytes``; the files in ``keep`` are never deleted (even if they
    alone exceed the bound).

    Returns:
        The deleted files, oldest first.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) \
            or max_bytes < 0:
        raise ValueError(
            f'max_bytes must be an int >= 0, got {max_bytes!r}')
    directory = Path(directory)
    keep = {Path(p).resolve() for p in keep}
    entries = []
    for pattern in patterns:
        for path in directory.glob(pattern):
            try:
                stat = path.stat()
            except OSError:  # removed meanwhile (another process)
                continue
            entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    deleted = []
    for _, size, path in sorted(entries, key=lambda e: (e[0], str(e[2]))):
        if total <= max_bytes:
            break
        if path.resolve() in keep:
            continue
        try:
            path.unlink()
        except OSError as err:
            print_log(f'cache: could not evict {path}: {err!r}',
                      logger='current', level=logging.WARNING)
            continue
        total -= size
        deleted.append(path)
    if deleted:
        print_log(
            f'cache: evicted {len(deleted)} least recently used file(s) '
            f'from {directory} to stay within {max_bytes / 2**20:.0f} MiB',
            logger='current')
    return deleted
