"""Safe checkpoint loading for MMEngine under ``torch>=2.6``.

mmengine 0.10.x reads local checkpoints with a bare ``torch.load``, which
``torch>=2.6`` runs with ``weights_only=True``; MMEngine's own checkpoints
hold a few non-tensor objects (the message hub's ``HistoryBuffer`` with its
numpy arrays, numpy scalars in the runtime info), so ``load_from`` and
``--resume`` fail. Turning ``weights_only`` off would let any downloaded
checkpoint run arbitrary code, so instead :func:`safe_torch_load` keeps
``weights_only=True`` and allows exactly the types our checkpoints hold
(:data:`SAFE_GLOBALS`). A checkpoint that needs anything else is refused
with an error naming the type; users who trust the file can opt in to full
unpickling with the environment variable ``CMA_OOD_TRUST_CHECKPOINTS=1``.

Importing :mod:`cma_ood` registers :func:`load_from_local_safe` as
MMEngine's loader for local paths (``CheckpointLoader`` scheme ``''``), so
``load_from``, ``resume`` and ``tools/test.py CONFIG CKPT`` all use it.
"""
import os
import os.path as osp
import pickle
from typing import Any, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader

TRUST_ENV_VAR = 'CMA_OOD_TRUST_CHECKPOINTS'


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


def safe_torch_load(filename: str, map_location: Any = None) -> Any:
    """``torch.load`` with ``weights_only=True`` and our allow-list.

    Raises ``pickle.UnpicklingError`` naming the refused content and the
    opt-in variable when the file holds anything outside the allow-list.
    """
    if os.environ.get(TRUST_ENV_VAR, '') == '1':
        print_log(
            f'{TRUST_ENV_VAR}=1: loading {filename} with full unpickling '
            '(weights_only=False); only do this for files you trust.',
            logger='current')
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
            f'If you trust this file, set {TRUST_ENV_VAR}=1 to load it with '
            'full unpickling, which can execute code stored in it.') from err


def _reason(err: Exception) -> str:
    """The informative line of torch's weights-only error."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for line in lines:
        if 'Unsupported' in line or 'refused' in line:
            return line
    return lines[-1] if lines else type(err).__name__


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local_safe(filename: str, map_location: Any = None) -> Any:
    """MMEngine local-path checkpoint loader using :func:`safe_torch_load`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return safe_torch_load(filename, map_location=map_location)
