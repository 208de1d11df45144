"""Checkpoints that a crash cannot corrupt, and loads that cannot silently
skip weights.

* :class:`AtomicCheckpointHook` replaces MMEngine's ``CheckpointHook`` in
  ``configs/_base_/default_runtime.py``. Stock MMEngine writes a checkpoint
  straight to its final path and deletes the oldest checkpoint
  (``max_keep_ckpts``) *before* writing the new one, so a job killed while
  saving can leave ``--resume`` a truncated file or no checkpoint at all.
* :class:`CheckpointMatchHook` makes ``load_from`` / ``--resume`` /
  ``tools/test.py CONFIG CKPT`` fail on a checkpoint of another
  architecture; MMEngine loads with ``strict=False`` and only logs a
  warning, after which the model tests with partly random weights.
"""
import glob
import os
import os.path as osp
import re
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import find_latest_checkpoint
from mmpretrain.registry import HOOKS

from cma_ood.utils.checkpoint import (commit_file,
                                      install_checkpoint_loader,
                                      installed_checkpoint_trust,
                                      state_dict_mismatch)

TMP_SUFFIX = '.part'
#: the name of :class:`AtomicLocalBackend` in MMEngine's backend registry
ATOMIC_BACKEND = 'cma_ood_atomic_local'


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """MMEngine's local file backend whose writes are atomic: ``put``
    writes a hidden temporary file next to the target
    (``.epoch_3.pth.part``), flushes it to disk and renames it into place
    (:func:`~cma_ood.utils.checkpoint.commit_file`), so a crash leaves
    either the old file or the complete new one. Selected per call with
    ``backend_args=dict(backend='cma_ood_atomic_local')``; the default
    local backend is untouched."""

    def put(self, obj: bytes, filepath) -> None:
        filepath = str(filepath)
        tmp = osp.join(osp.dirname(filepath),
                       f'.{osp.basename(filepath)}{TMP_SUFFIX}')
        super().put(obj, tmp)
        commit_file(tmp, filepath)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        self.put(obj.encode(encoding), filepath)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` (same arguments) with crash-safe saving,
    built on its public extension points only.

    For a local ``out_dir`` (``backend_args`` not given):

    1. checkpoints are written through :class:`AtomicLocalBackend`: a
       hidden temporary file, flushed and renamed into place only when
       complete;
    2. checkpoints beyond ``max_keep_ckpts`` are deleted after the new one
       is complete (MMEngine deletes the oldest *before* writing the new
       one, so with ``max_keep_ckpts=1`` a crash while saving left nothing
       to resume from);
    3. temporary files of a crashed save are deleted when training starts.

    MMEngine then writes ``last_checkpoint`` (one short line) after the
    checkpoint is complete; ``tools/train.py --resume`` checks what it names
    and falls back to the newest complete checkpoint if a crash cut that
    line short. Other storage backends (object stores, whose uploads are
    atomic) use MMEngine's behaviour unchanged, as do ``save_best``
    checkpoints, which resuming never reads.
    """

    def __init__(self, *args, max_keep_ckpts: int = -1, backend_args=None,
                 out_dir=None, **kwargs):
        self._atomic = backend_args is None and (
            out_dir is None or '://' not in str(out_dir))
        self._keep = max_keep_ckpts
        super().__init__(
            *args,
            max_keep_ckpts=-1 if self._atomic else max_keep_ckpts,
            backend_args=dict(backend=ATOMIC_BACKEND)
            if self._atomic else backend_args,
            out_dir=out_dir,
            **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._atomic and is_main_process():
            for leftover in glob.glob(osp.join(self.out_dir,
                                               '.*' + TMP_SUFFIX)):
                os.remove(leftover)

    def _prune(self) -> None:
        """Delete the oldest of our checkpoints beyond ``max_keep_ckpts``
        (by the step in their name), after a save completed."""
        if not self._atomic or self._keep <= 0 or not is_main_process():
            return
        pattern = re.compile(
            re.escape(self.filename_tmpl).replace(r'\{\}', r'(\d+)') + '$')
        steps = sorted(
            (int(m.group(1)), name) for name in os.listdir(self.out_dir)
            for m in [pattern.match(name)] if m)
        for _, name in steps[:-self._keep]:
            os.remove(osp.join(self.out_dir, name))

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        before = self.last_ckpt if hasattr(self, 'last_ckpt') else None
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        if getattr(self, 'last_ckpt', None) != before:
            self._prune()

    def after_train_epoch(self, runner) -> None:
        before = self.last_ckpt if hasattr(self, 'last_ckpt') else None
        super().after_train_epoch(runner)
        if getattr(self, 'last_ckpt', None) != before:
            self._prune()


def _loaded_checkpoint_name(runner) -> str:
    """The file ``runner`` loads: ``load_from``, else (auto-resume) the one
    ``last_checkpoint`` names."""
    name = runner.cfg.get('load_from')
    if name is None and runner.cfg.get('resume'):
        name = find_latest_checkpoint(runner.work_dir)
    return str(name) if name else 'the checkpoint'


@HOOKS.register_module()
class CheckpointMatchHook(Hook):
    """Refuse a checkpoint whose weights do not fit the model.

    Before MMEngine copies a loaded checkpoint into the model (``load_from``,
    ``resume``), compares its ``state_dict`` (``module.`` prefixes removed,
    as MMEngine does) with the model's and raises a ``RuntimeError`` naming
    the checkpoint and the first shape mismatches, missing and unexpected
    keys.
    """
    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', checkpoint)
        state = {
            k[len('module.'):] if k.startswith('module.') else k: v
            for k, v in state.items()
        }
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        problem = state_dict_mismatch(model.state_dict(), state)
        if problem is None:
            return
        arch = getattr(model, 'arch', None)
        what = type(model).__name__ + (f' (arch {arch!r})' if arch else '')
        raise RuntimeError(
            f'{_loaded_checkpoint_name(runner)} does not fit the {what} of '
            f'this config: {problem}. Use a checkpoint trained with this '
            'architecture; convert published CMA or OpenAI CLIP checkpoints '
            'with tools/convert_cma_checkpoint.py')


@HOOKS.register_module()
class SafeCheckpointHook(Hook):
    """Before the run (and so before ``load_from`` / ``resume``), make
    MMEngine read local checkpoints with cma_ood's safe loader
    (:func:`~cma_ood.utils.checkpoint.install_checkpoint_loader`).

    Args:
        trust (bool, optional): full unpickling for files you trust.
            ``None`` (the default) keeps a loader that the entry point
            installed (our tools do, with their ``--trust-checkpoint``) and
            installs the safe one otherwise.
    """
    priority = 'VERY_HIGH'

    def __init__(self, trust: Optional[bool] = None):
        if trust is not None and not isinstance(trust, bool):
            raise TypeError(f'trust must be None or a bool, got {trust!r}')
        self.trust = trust

    def before_run(self, runner) -> None:
        if self.trust is not None:
            install_checkpoint_loader(self.trust)
        elif installed_checkpoint_trust() is None:
            install_checkpoint_loader(False)
