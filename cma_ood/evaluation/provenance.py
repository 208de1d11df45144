"""Provenance of an evaluation run, as recorded in ``ood_results.json``.

What was run (config and checkpoint files with their sha256), which model
and OoD scorers with which settings, under which package versions and
when. :func:`run_provenance` assembles the record from plain inputs;
:class:`~cma_ood.engine.hooks.OoDOutputHook` feeds it from the runner.
"""
import datetime
import hashlib
import importlib
import importlib.metadata
import inspect
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Sequence

#: Read size of :func:`sha256_file` (bytes).
HASH_CHUNK = 8 << 20

#: Importable modules whose versions are recorded (``None`` when absent).
#: ``mmcv`` may be the ``mmcv`` or ``mmcv-lite`` distribution and ``clip``
#: OpenAI's ``openai-clip``; the module's ``__version__`` is used, else its
#: distribution's metadata.
VERSIONED_MODULES = ('cma_ood', 'torch', 'torchvision', 'mmengine',
                     'mmpretrain', 'mmcv', 'numpy', 'clip')

#: Keys of the record :func:`run_provenance` returns.
PROVENANCE_KEYS = ('date_utc', 'config_path', 'config_sha256',
                   'checkpoint_path', 'checkpoint_sha256', 'model_type',
                   'model_arch', 'model_pretrained', 'ood_scorers',
                   'versions')


def sha256_file(path: str, chunk_size: int = HASH_CHUNK) -> str:
    """Hex sha256 of the file at ``path``, streamed in ``chunk_size`` reads
    (constant memory; a multi-GB checkpoint is read once)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(chunk_size), b''):
            digest.update(chunk)
    return digest.hexdigest()


def local_file_sha256(path: Optional[str],
                      hash_file: Callable[[str], str] = sha256_file
                      ) -> Optional[str]:
    """``hash_file(path)`` for a local file, ``None`` for ``None``, a URL
    or a path that is not a file."""
    if not path or not isinstance(path, str) or not osp.isfile(path):
        return None
    return hash_file(path)


def utc_now_iso() -> str:
    """Current time, ISO 8601 in UTC to the second, e.g.
    ``'2026-11-24T09:30:12+00:00'``."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec='seconds')


#: distributions of modules whose name differs and that have no
#: ``__version__`` (``importlib.metadata.packages_distributions`` finds
#: them too, but reads every installed package's metadata: seconds)
KNOWN_DISTRIBUTIONS = {'clip': ('openai-clip', 'clip')}


def module_version(name: str) -> Optional[str]:
    """Version of the importable module ``name``: its ``__version__``, else
    the version of the distribution that provides it; ``None`` when it
    cannot be imported or has no version."""
    try:
        module = importlib.import_module(name)
    except Exception:  # noqa: BLE001 -- absent or broken: not recorded
        return None
    version = getattr(module, '__version__', None)
    if version:
        return str(version)

    def candidates():  # the slow scan only when the direct names fail
        yield from KNOWN_DISTRIBUTIONS.get(name, (name, ))
        yield from importlib.metadata.packages_distributions().get(name, ())

    for dist in candidates():
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def package_versions(names: Sequence[str] = VERSIONED_MODULES
                     ) -> Dict[str, Optional[str]]:
    """``{module: version or None}`` for ``names``, in that order."""
    return {name: module_version(name) for name in names}


def to_jsonable(obj: Any) -> Any:
    """A JSON-serialisable copy of a config value: mappings (``ConfigDict``
    included) to dicts with str keys, tuples/lists to lists, numpy scalars
    to Python numbers, classes and functions (lazy-import configs) to their
    ``module.qualname``, anything else unknown to its ``repr``."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict) or hasattr(obj, 'items'):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, 'item') and callable(obj.item):
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return f'{obj.__module__}.{obj.__qualname__}'
    return repr(obj)


def configured_scorers(model: Any,
                       scorer_cfgs: Optional[Sequence[dict]]
                       ) -> Optional[Sequence[dict]]:
    """The scorer configs a model was built from: ``scorer_cfgs`` (the
    config's ``model.ood_scorers``) when given, else the default of the
    ``ood_scorers`` argument of ``type(model).__init__``, else ``None``."""
    if scorer_cfgs is not None:
        return scorer_cfgs
    try:
        param = inspect.signature(type(model).__init__).parameters.get(
            'ood_scorers')
    except (TypeError, ValueError):
        return None
    if param is None or param.default is inspect.Parameter.empty:
        return None
    return param.default


def scorer_records(scorers: Sequence[Any],
                   scorer_cfgs: Optional[Sequence[dict]]) -> List[dict]:
    """One record per scorer module: ``type`` (its class name), ``name``
    (its ``.name``, the key of the results) and ``args``, the constructor
    arguments as configured (the config entry without ``type``, matched by
    position; ``None`` if the configs do not line up with the modules).

    Args:
        scorers: the model's built scorer modules, in order.
        scorer_cfgs: the configs they were built from, same order, or
            ``None``.
    """
    cfgs = list(scorer_cfgs) if scorer_cfgs is not None else None
    aligned = cfgs is not None and len(cfgs) == len(scorers)
    records = []
    for i, scorer in enumerate(scorers):
        args = None
        if aligned:
            args = {k: v for k, v in to_jsonable(cfgs[i]).items()
                    if k != 'type'}
        records.append(dict(type=type(scorer).__name__,
                            name=getattr(scorer, 'name', None), args=args))
    return records


def _path(path: Any) -> Optional[str]:
    return os.fspath(path) if isinstance(path, os.PathLike) else path


def run_provenance(config_path: Optional[str],
                   checkpoint: Optional[str],
                   model: Any = None,
                   scorer_cfgs: Optional[Sequence[dict]] = None,
                   pretrained: Any = None,
                   date_utc: Optional[str] = None,
                   versions: Optional[Dict[str, Optional[str]]] = None,
                   hash_file: Callable[[str], str] = sha256_file) -> dict:
    """The provenance record of ``ood_results.json`` (keys
    :data:`PROVENANCE_KEYS`, all JSON-serialisable).

    Args:
        config_path: the config file the run was started from, or ``None``
            (config built in Python). Its sha256 covers that file only, not
            its ``_base_`` files or command-line overrides (MMEngine's
            Runner dumps the merged config into the work dir).
        checkpoint: ``load_from`` of the run; ``None`` for zero-shot
            weights (then path and sha256 are ``None``; a URL keeps its
            path and a ``None`` sha256).
        model: the unwrapped model; ``type(model).__name__``, its ``arch``
            attribute and its ``ood_scorers`` modules are recorded.
        scorer_cfgs: the config's ``model.ood_scorers`` (see
            :func:`configured_scorers` when ``None``).
        pretrained: the config's ``model.pretrained`` (``'openai'``, a
            path or ``None``), recorded as configured, not hashed.
        date_utc: ISO 8601 UTC time; defaults to :func:`utc_now_iso`.
        versions: defaults to :func:`package_versions`.
        hash_file: file hasher (``path -> hex``), e.g. a caching one.
    """
    scorers = list(getattr(model, 'ood_scorers', None) or [])
    config_path, checkpoint = _path(config_path), _path(checkpoint)
    return dict(
        date_utc=date_utc or utc_now_iso(),
        config_path=config_path,
        config_sha256=local_file_sha256(config_path, hash_file),
        checkpoint_path=checkpoint,
        checkpoint_sha256=local_file_sha256(checkpoint, hash_file),
        model_type=None if model is None else type(model).__name__,
        model_arch=to_jsonable(getattr(model, 'arch', None)),
        model_pretrained=to_jsonable(pretrained),
        ood_scorers=scorer_records(
            scorers, configured_scorers(model, scorer_cfgs)),
        versions=package_versions() if versions is None else versions,
    )
