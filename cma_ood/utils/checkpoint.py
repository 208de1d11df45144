"""Safe checkpoint loading for MMEngine under ``torch>=2.6``.

mmengine 0.10.x reads local checkpoints with a bare ``torch.load``, which
``torch>=2.6`` runs with ``weights_only=True``; MMEngine's own checkpoints
hold a few non-tensor objects (the message hub's ``HistoryBuffer`` with its
numpy arrays, numpy scalars in the runtime info), so ``load_from`` and
``--resume`` fail. Turning ``weights_only`` off would let any downloaded
checkpoint run arbitrary code, so instead :func:`safe_torch_load` keeps
``weights_only=True`` and allows exactly the types our checkpoints hold
(:func:`safe_globals`). A checkpoint that needs anything else is refused
with an error naming the type; a user who trusts the file passes
``trust=True`` (the tools' ``--trust-checkpoint``) to load it with full
unpickling.

Importing :mod:`cma_ood` changes nothing in MMEngine.
:func:`install_checkpoint_loader` makes :func:`safe_torch_load` MMEngine's
loader for local paths (``CheckpointLoader`` scheme ``''``), so that
``load_from``, ``resume`` and ``tools/test.py CONFIG CKPT`` use it; our
tools call it with their ``--trust-checkpoint`` value, and
``SafeCheckpointHook`` (in ``configs/_base_/default_runtime.py``) installs
it before a run whose entry point did not.

Also here: crash-safe file replacement (:func:`commit_file`,
:func:`atomic_write_text`, used by ``AtomicCheckpointHook``) and
:func:`state_dict_mismatch`, the description of a checkpoint that does not
fit a model (used by ``CheckpointMatchHook`` and the checkpoint converter).
"""
import argparse
import glob
import logging
import os
import os.path as osp
import pickle
import zipfile
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader


def add_trust_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """Add the tools' ``--trust-checkpoint`` flag (``args.trust_checkpoint``,
    a bool passed on to :func:`install_checkpoint_loader` /
    :func:`safe_torch_load`)."""
    parser.add_argument(
        '--trust-checkpoint',
        action='store_true',
        help='load checkpoints with full unpickling (weights_only=False), '
        'which can run code stored in them: only for files you trust that '
        'hold more than cma_ood checkpoints do')


def _numpy_globals() -> List[Any]:
    """numpy types that pickled arrays and scalars refer to."""
    types: List[Any] = [np.ndarray, np.dtype]
    # array reconstruction helper (numpy 2 moved numpy.core to numpy._core)
    for mod_name in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        try:
            mod = __import__(mod_name, fromlist=['_reconstruct', 'scalar'])
        except ImportError:
            continue
        types += [mod._reconstruct, mod.scalar]
        break
    # dtype classes of numpy >= 1.25 (numpy.dtypes.Float64DType, ...)
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        types += [
            getattr(dtypes, name) for name in dir(dtypes)
            if name.endswith('DType')
        ]
    return types


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling.

    A ``HistoryBuffer`` pickles its statistics methods as
    ``getattr(HistoryBuffer, 'mean')``; allowing the real ``getattr`` would
    let a crafted file reach any attribute of any allowed object, so only
    those lookups are served.
    """
    allowed = {'min', 'max', 'mean', 'current', \
               *HistoryBuffer._statistics_methods}
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        f'refused getattr({getattr(obj, "__name__", type(obj).__name__)}, '
        f'{name!r}) while loading a checkpoint')


def safe_globals() -> List[Any]:
    """Globals allowed when unpickling checkpoints with ``weights_only``:
    the message hub's ``HistoryBuffer`` (with a getattr restricted to its
    statistics methods) and the numpy types its arrays and scalars use."""
    return [
        HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'),
        *_numpy_globals()
    ]


class CheckpointFileError(ValueError):
    """A file that is not a (complete) PyTorch checkpoint."""


_ZIP_MAGIC = b'PK\x03\x04'
#: first bytes of a pickle (protocol 2-5): the legacy ``torch.save`` format
_PICKLE_STARTS = tuple(b'\x80' + bytes([v]) for v in range(2, 6))


def checkpoint_file_problem(filename: str) -> Optional[str]:
    """Why ``filename`` is not a complete PyTorch checkpoint, or ``None``
    when it looks like one (the structure only: a zip archive with its
    end-of-archive record and a ``data.pkl``, or a legacy pickle).

    The text completes "``<filename>`` ...", e.g. ``'is truncated: ...'``.
    """
    try:
        size = os.path.getsize(filename)
        with open(filename, 'rb') as f:
            head = f.read(16)
    except OSError as err:
        return f'cannot be read ({type(err).__name__}: {err})'
    if size == 0:
        return 'is empty (0 bytes): not a PyTorch checkpoint'
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(filename):
            return (f'is truncated: a PyTorch checkpoint (zip archive) of '
                    f'{size} bytes without its end-of-archive record; was '
                    'it still being written or copied? Use a complete copy')
        try:
            with zipfile.ZipFile(filename) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile as err:
            return f'is a damaged zip archive ({err})'
        if not any(n.endswith('data.pkl') for n in names):
            return ('is a zip archive but not a PyTorch checkpoint (it '
                    'holds no data.pkl)')
        return None
    if head.startswith(_PICKLE_STARTS):
        return None
    return (f'is not a PyTorch checkpoint: it starts with {head!r}, where '
            'torch.save writes a zip archive (or a pickle)')


def safe_torch_load(filename: str,
                    map_location: Any = None,
                    trust: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and our allow-list, or with
    full unpickling when ``trust`` is True (only for files you trust).

    Raises:
        CheckpointFileError: in one line naming the file, when it is not a
            PyTorch checkpoint or is truncated
            (:func:`checkpoint_file_problem`).
        pickle.UnpicklingError: naming the refused content and the opt-in
            flag when the file holds anything outside the allow-list.
    """
    try:
        return _torch_load(filename, map_location, trust)
    except Exception as err:
        problem = checkpoint_file_problem(filename)
        if problem is None:
            raise
        raise CheckpointFileError(f'{filename} {problem}') from err


def _torch_load(filename: str, map_location: Any, trust: bool) -> Any:
    if trust:
        return torch.load(filename, map_location=map_location,
                          weights_only=False)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(filename, map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'Refused to load {filename}: it holds objects outside the '
            f'allow-list of cma_ood checkpoints ({_reason(err)}). '
            'If you trust this file, pass --trust-checkpoint to '
            'tools/train.py / tools/test.py / tools/extract_features.py / '
            'tools/convert_cma_checkpoint.py (trust=True in Python) to load '
            'it with full unpickling, which can execute code stored in '
            'it.') from err


def _reason(err: Exception) -> str:
    """The informative line of torch's weights-only error."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if 'Unsupported' in line or 'refused' in line:
            return line
    return lines[-1] if lines else type(err).__name__


def load_from_local_safe(filename: str,
                         map_location: Any = None,
                         trust: bool = False) -> Any:
    """MMEngine local-path checkpoint loader using :func:`safe_torch_load`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location, trust=trust)


def installed_checkpoint_trust() -> Optional[bool]:
    """The ``trust`` of the loader :func:`install_checkpoint_loader`
    installed in MMEngine, or ``None`` if MMEngine uses another loader for
    local paths (its own, until one is installed)."""
    loader = CheckpointLoader._schemes.get('')
    return getattr(loader, 'cma_ood_trust', None)


def install_checkpoint_loader(trust: bool = False) -> None:
    """Make MMEngine read local checkpoints with :func:`safe_torch_load`
    (``trust``: full unpickling). Logged once per change; calling it again
    with the same ``trust`` does nothing."""
    if not isinstance(trust, bool):
        raise TypeError(f'trust must be a bool, got {trust!r}')
    if installed_checkpoint_trust() is trust:
        return

    def loader(filename: str, map_location: Any = None) -> Any:
        return load_from_local_safe(filename, map_location, trust=trust)

    # MMEngine logs the loader's __name__
    loader.__name__ = loader.__qualname__ = 'load_from_local_safe'
    loader.cma_ood_trust = trust
    CheckpointLoader.register_scheme(prefixes='', loader=loader, force=True)
    if trust:
        print_log(
            'Checkpoints are loaded with full unpickling (--trust-checkpoint, '
            'weights_only=False): only do this for files you trust.',
            logger='current', level=logging.WARNING)
    else:
        print_log(
            'Local checkpoints are loaded with weights_only=True and the '
            'allow-list of cma_ood checkpoints (--trust-checkpoint to load '
            'others)', logger='current')


def resume_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` should continue from in ``work_dir``.

    The one ``last_checkpoint`` names, if that is a complete checkpoint
    file (:func:`checkpoint_file_problem`); else (a crash cut
    ``last_checkpoint`` short, or the file it names is gone) the newest
    complete ``*.pth`` of ``work_dir`` by modification time; ``None`` when
    there is none (start from scratch).
    """
    pointer = osp.join(work_dir, 'last_checkpoint')
    named = None
    if osp.isfile(pointer):
        with open(pointer, encoding='utf-8') as f:
            named = f.read().strip() or None
    if named is not None and osp.isfile(named) and \
            checkpoint_file_problem(named) is None:
        return named
    candidates = sorted(
        (p for p in glob.glob(osp.join(work_dir, '*.pth'))
         if checkpoint_file_problem(p) is None),
        key=osp.getmtime)
    return candidates[-1] if candidates else None


# ------------------------------------------------------------ atomic writes
def fsync_dir(dirname: str) -> None:
    """Flush a directory entry (a rename) to disk; a no-op where directories
    cannot be opened (Windows)."""
    try:
        fd = os.open(dirname or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_file(tmp_path: str, final_path: str) -> None:
    """Make the complete file ``tmp_path`` appear as ``final_path`` at once.

    The data is flushed to disk (``fsync``) before ``os.replace`` renames it
    over ``final_path`` (atomic within one file system, so ``tmp_path`` must
    be in the same directory), and the directory is flushed afterwards: a
    crash at any point leaves either the old ``final_path`` or the new one,
    never a partial file.
    """
    with open(tmp_path, 'rb+') as f:
        os.fsync(f.fileno())
    os.replace(tmp_path, final_path)
    fsync_dir(osp.dirname(osp.abspath(final_path)))


def _atomic_write(path: str, write) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path`` (created
    with its parent directories), then :func:`commit_file` it; the temporary
    file is removed if anything fails."""
    path = osp.abspath(osp.expanduser(str(path)))
    os.makedirs(osp.dirname(path), exist_ok=True)
    tmp = osp.join(osp.dirname(path),
                   f'.{osp.basename(path)}.{os.getpid()}.part')
    try:
        write(tmp)
        commit_file(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temp file, fsync, rename)."""

    def write(tmp):
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)

    _atomic_write(path, write)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` atomically (temp file, fsync, rename): a
    crash leaves the old file or the new one, never a partial one."""
    _atomic_write(path, lambda tmp: torch.save(obj, tmp))


# -------------------------------------------------- state-dict comparison
def strip_prefixes(key: str, prefixes: Sequence[str]) -> str:
    """``key`` without any leading ``prefixes`` (in any order, repeated:
    ``'module.clip.visual.proj'`` -> ``'visual.proj'``)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def state_dict_mismatch(model_state: Dict[str, Any],
                        ckpt_state: Dict[str, Any],
                        limit: int = 5) -> Optional[str]:
    """Describe how ``ckpt_state`` differs from ``model_state``, or ``None``.

    Compares keys and tensor shapes; the description lists the first
    ``limit`` shape mismatches (key, checkpoint shape, model shape), missing
    keys (in the model, not in the checkpoint) and unexpected keys.
    """
    def shape(v):
        return tuple(v.shape) if hasattr(v, 'shape') else None

    missing = [k for k in model_state if k not in ckpt_state]
    unexpected = [k for k in ckpt_state if k not in model_state]
    shapes = [(k, shape(v), shape(model_state[k]))
              for k, v in ckpt_state.items()
              if k in model_state and shape(v) != shape(model_state[k])]
    parts = []
    if shapes:
        parts.append(f'{len(shapes)} shape mismatch(es) (key, checkpoint, '
                     'model): ' + ', '.join(map(str, shapes[:limit])))
    if missing:
        parts.append(f'{len(missing)} missing key(s): {missing[:limit]}')
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected key(s): '
                     f'{unexpected[:limit]}')
    return '; '.join(parts) or None
