"""Checkpoints that a crash cannot corrupt, and loads that cannot silently
skip weights.

* :class:`AtomicCheckpointHook` replaces MMEngine's ``CheckpointHook`` in
  ``configs/_base_/default_runtime.py``. Stock MMEngine writes a checkpoint
  straight to its final path, rewrites ``last_checkpoint`` in place and
  deletes the oldest checkpoint (``max_keep_ckpts``) *before* writing the
  new one, so a job killed while saving can leave ``--resume`` a truncated
  file, an empty ``last_checkpoint`` or no checkpoint at all.
* :class:`CheckpointMatchHook` makes ``load_from`` / ``--resume`` /
  ``tools/test.py CONFIG CKPT`` fail on a checkpoint of another
  architecture; MMEngine loads with ``strict=False`` and only logs a
  warning, after which the model tests with partly random weights.
"""
import glob
import os
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import find_latest_checkpoint
from mmpretrain.registry import HOOKS

from cma_ood.utils.checkpoint import (atomic_write_text, commit_file,
                                      install_checkpoint_loader,
                                      installed_checkpoint_trust,
                                      state_dict_mismatch)

TMP_SUFFIX = '.part'


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` (same arguments) with crash-safe saving.

    For a local ``out_dir``:

    1. a checkpoint is written to a hidden temporary file next to its final
       path (``.epoch_3.pth.part``), flushed to disk and renamed into place
       only when complete (``os.replace`` is atomic);
    2. ``last_checkpoint``, which ``--resume`` reads, is replaced atomically
       and only after the checkpoint it names is complete;
    3. checkpoints beyond ``max_keep_ckpts`` are deleted after the new one
       is complete.

    A crash at any moment therefore leaves ``last_checkpoint`` naming a
    complete checkpoint. Temporary files of a crashed save are deleted when
    training starts. Other storage backends (object stores, whose uploads
    are atomic) use MMEngine's code unchanged, as do ``save_best``
    checkpoints, which resuming never reads.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._is_local() and is_main_process():
            for leftover in glob.glob(osp.join(self.out_dir,
                                               '.*' + TMP_SUFFIX)):
                os.remove(leftover)

    def _is_local(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._is_local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and
                                            self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        tmp_filename = f'.{ckpt_filename}{TMP_SUFFIX}'
        runner.save_checkpoint(
            self.out_dir,
            tmp_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        commit_file(osp.join(self.out_dir, tmp_filename), self.last_ckpt)
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'),
                          self.last_ckpt)
        for old_step in outdated:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)


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
