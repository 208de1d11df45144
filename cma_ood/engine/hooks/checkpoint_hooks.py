"""Checkpoints that a crash cannot corrupt, and loads that cannot silently
skip weights.

* :class:`AtomicCheckpointHook` replaces MMEngine's ``CheckpointHook`` in
  ``configs/_base_/default_runtime.py``. Stock MMEngine writes a checkpoint
  straight to its final path and deletes the oldest checkpoint
  (``max_keep_ckpts``) *before* writing the new one, so a job killed while
  saving can leave ``--resume`` a truncated file or no checkpoint at all.
  On a GPU it also serialises and writes the checkpoint in a background
  thread (``async_save``), so training stalls only for the copy to host
  memory.
* :class:`CheckpointMatchHook` makes ``load_from`` / ``--resume`` /
  ``tools/test.py CONFIG CKPT`` fail on a checkpoint of another
  architecture; MMEngine loads with ``strict=False`` and only logs a
  warning, after which the model tests with partly random weights.
"""
import copy
import glob
import logging
import os
import os.path as osp
import re
import threading
import time
from typing import Any, Dict, Optional, Set

import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import find_latest_checkpoint, save_checkpoint
from mmpretrain.registry import HOOKS
from torch.overrides import TorchFunctionMode

from cma_ood.utils.checkpoint import (atomic_write_text, commit_file,
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


class AsyncCheckpointError(RuntimeError):
    """A checkpoint that :class:`AtomicCheckpointHook` wrote in the
    background could not be saved (raised at the next save or at the end of
    training; the original error is its ``__cause__``)."""


#: background checkpoint writes of this process that have not finished
#: name prefix of the background writer threads (found again through
#: ``threading.enumerate``, so that no registry of them is kept)
WRITER_THREAD_PREFIX = 'cma_ood-checkpoint-writer:'


def wait_for_checkpoint_writes() -> None:
    """Wait until every checkpoint that an :class:`AtomicCheckpointHook` of
    this process is writing in the background is complete (or failed: the
    hook raises that error itself)."""
    for thread in threading.enumerate():
        if thread.name.startswith(WRITER_THREAD_PREFIX):
            thread.join()


def _leaves(obj: Any):
    """The non-container values of nested tuples, lists and dicts."""
    if isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _leaves(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _leaves(item)
    else:
        yield obj


class _HostCopies(TorchFunctionMode):
    """A PyTorch function mode for one ``Runner.save_checkpoint`` call:
    MMEngine's ``tensor.cpu()`` (``weights_to_cpu`` and the optimizer's
    state) of a CUDA tensor becomes a non-blocking copy into pinned host
    memory, which PyTorch's caching host allocator hands out again at the
    next save (2 GB of weights and AdamW state on an H200: 1.5 s with
    ``.cpu()``; 0.04 s pinned, after a first save that pays 1.6 s for the
    pinning). Any operation that reads such a copy
    waits for the copies first, so it sees what ``.cpu()`` would give; the
    copies are remembered as tensors that only the checkpoint holds."""

    def __init__(self):
        super().__init__()
        #: id -> host copy made by this mode
        self.copies: Dict[int, torch.Tensor] = {}
        self._devices: Set[torch.device] = set()
        self._pending = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cpu and len(args) == 1 and not kwargs:
            tensor = args[0]
            if (type(tensor) is torch.Tensor and tensor.is_cuda
                    and tensor.layout == torch.strided
                    and not tensor.requires_grad):
                copy_ = tensor.to('cpu', non_blocking=True)
                self.copies[id(copy_)] = copy_
                self._devices.add(tensor.device)
                self._pending = True
                return copy_
        if self._pending and any(
                id(value) in self.copies for value in _leaves((args, kwargs))):
            self.synchronize()
        return func(*args, **kwargs)

    def synchronize(self) -> None:
        """Wait until the copies are complete (one synchronize a device)."""
        for device in self._devices:
            torch.cuda.synchronize(device)
        self._pending = False


class _CheckpointTaken(Exception):
    """Raised by :meth:`AtomicCheckpointHook.before_save_checkpoint` to end
    ``Runner.save_checkpoint`` (and ``CheckpointHook``'s save) right before
    MMEngine would serialise the checkpoint and write ``last_checkpoint``;
    caught by the hook, which does both in a background thread."""

    def __init__(self, snapshot: Optional[dict]):
        super().__init__()
        #: the checkpoint to write, or None when it was written already
        self.snapshot = snapshot


def _model_on_cuda(model) -> bool:
    param = next(iter(model.parameters()), None)
    return param is not None and param.is_cuda


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """MMEngine's ``CheckpointHook`` (same arguments) with crash-safe saving
    and, on a GPU, saving in the background; built on public extension
    points of MMEngine (hook methods, a file backend) and PyTorch (a
    function mode) only.

    For a local ``out_dir`` (``backend_args`` not given):

    1. checkpoints are written through :class:`AtomicLocalBackend`: a
       hidden temporary file, flushed and renamed into place only when
       complete;
    2. checkpoints beyond ``max_keep_ckpts`` are deleted after the new one
       is complete (MMEngine deletes the oldest *before* writing the new
       one, so with ``max_keep_ckpts=1`` a crash while saving left nothing
       to resume from);
    3. temporary files of a crashed save are deleted when training starts.

    Synchronously (``async_save`` off), MMEngine then writes
    ``last_checkpoint`` (one short line) after the checkpoint is complete;
    ``tools/train.py --resume`` checks what it names and falls back to the
    newest complete checkpoint if a crash cut that line short. Other
    storage backends (object stores, whose uploads are atomic) use
    MMEngine's behaviour unchanged, as do ``save_best`` checkpoints, which
    resuming never reads.

    Args:
        async_save (bool, optional): serialise and write checkpoints in a
            background thread, so that training stalls only while the
            checkpoint is copied to host memory (for ViT-B/16 with AdamW,
            1.7 GB, the synchronous save stalled a GPU for 36 s; with 2 GB
            on an H200 and a local disk, 4.1-5.3 s a save synchronously,
            0.07 s in the background after a first save of 1.7 s that pins
            the host memory). ``None``
            (the default): on when the model is on a CUDA device. Off on
            CPU: there ``.cpu()`` returns the live tensors, so the snapshot
            is a full copy in memory that costs a good part of the
            serialisation it saves (on a 2-core CPU, 400 MB: 1.2 s to
            copy, 2.2 s to serialise), and the writer would compete with
            training for the cores. ``True``/``False`` force it (``True``
            only for a local ``out_dir``). Other arguments: those of
            ``CheckpointHook``.

    With ``async_save``, a save (every ``interval``) goes like this:

    1. MMEngine's ``Runner.save_checkpoint`` builds the checkpoint dict as
       usual (meta, message hub, optimizer, schedulers, other hooks'
       ``before_save_checkpoint``). Its ``.cpu()`` copies of CUDA tensors
       are made non-blocking into pinned host memory (:class:`_HostCopies`,
       a PyTorch ``TorchFunctionMode``) and waited for once; whatever else
       training could still change (CPU tensors, e.g. the optimizer's step
       counts, and the dict itself) is deep-copied. This is the stall.
    2. This hook's ``before_save_checkpoint`` takes that snapshot and raises
       a private exception that it catches in ``after_train_iter`` /
       ``after_train_epoch``: that ends ``Runner.save_checkpoint`` before
       it serialises and ``CheckpointHook._save_checkpoint_with_step``
       before it writes ``last_checkpoint`` (in MMEngine 0.10 the only
       steps after the hook call), so no private method is overridden.
       Hooks of lower priority get their ``before_save_checkpoint`` first.
    3. A background thread serialises the snapshot with MMEngine's own
       ``save_checkpoint`` (``torch.save`` into memory, then
       :class:`AtomicLocalBackend`: temporary file, fsync, rename), the
       code and bytes of the synchronous path; only then it replaces
       ``last_checkpoint`` (atomically) and deletes checkpoints beyond
       ``max_keep_ckpts``. At any moment ``last_checkpoint`` names a
       complete file, and nothing is deleted before the newer checkpoint
       is complete; a kill leaves at most a ``.part`` file.

    At most one save is in flight: the next save, a ``save_best``
    evaluation, the end of training (``after_train``, ``after_run``) and
    the start of another run in this process (``before_run``, before a
    resume reads the files) wait for it. An error of the writer is logged
    when it happens and raised as :class:`AsyncCheckpointError`, naming the
    file, at the next save or at the end of training. The thread is not a
    daemon: a process that ends otherwise finishes the write first. Memory:
    one host copy of the checkpoint while it is written (in pinned memory
    that PyTorch keeps for the next save), besides the serialised bytes
    that the synchronous path holds too.
    """

    def __init__(self, *args, max_keep_ckpts: int = -1, backend_args=None,
                 out_dir=None, async_save: Optional[bool] = None, **kwargs):
        if async_save is not None and not isinstance(async_save, bool):
            raise TypeError(
                f'async_save must be None or a bool, got {async_save!r}')
        self._atomic = backend_args is None and (
            out_dir is None or '://' not in str(out_dir))
        self._keep = max_keep_ckpts
        self.async_save = async_save
        self._async = False  # decided in before_train
        self._taking: Optional[_HostCopies] = None
        self._writer: Optional[threading.Thread] = None
        self._writer_error = None
        super().__init__(
            *args,
            max_keep_ckpts=-1 if self._atomic else max_keep_ckpts,
            backend_args=dict(backend=ATOMIC_BACKEND)
            if self._atomic else backend_args,
            out_dir=out_dir,
            **kwargs)

    # ------------------------------------------------------------ run
    def before_run(self, runner) -> None:
        # a run of this process that ended with an error may still be
        # writing a checkpoint that this run resumes from
        wait_for_checkpoint_writes()

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._async = self._use_async(runner)
        if self._atomic and is_main_process():
            for leftover in glob.glob(osp.join(self.out_dir,
                                               '.*' + TMP_SUFFIX)):
                os.remove(leftover)
        if self._async:
            runner.logger.info(
                'Checkpoints are written in a background thread '
                '(AtomicCheckpointHook async_save): training waits only '
                'for the copy to host memory')

    def _use_async(self, runner) -> bool:
        if self.async_save is False:
            return False
        if not self._atomic:
            if self.async_save:
                runner.logger.warning(
                    'AtomicCheckpointHook: async_save needs a local out_dir '
                    'without backend_args; saving synchronously')
            return False
        return bool(self.async_save) or _model_on_cuda(runner.model)

    def after_train(self, runner) -> None:
        self.wait_for_save()  # before MMEngine publishes last_ckpt
        super().after_train(runner)

    def after_run(self, runner) -> None:
        self.wait_for_save()

    # ----------------------------------------------------------- saves
    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        saves = not self.by_epoch and (
            self.every_n_train_iters(runner, self.interval, self.save_begin)
            or (self.save_last and self.is_last_train_iter(runner)))
        self._save(runner, saves, super().after_train_iter, runner,
                   batch_idx, data_batch, outputs)

    def after_train_epoch(self, runner) -> None:
        saves = self.by_epoch and (
            self.every_n_epochs(runner, self.interval, self.save_begin)
            or (self.save_last and self.is_last_train_epoch(runner)))
        self._save(runner, saves, super().after_train_epoch, runner)

    def after_val_epoch(self, runner, metrics) -> None:
        if self.save_best is not None:
            # MMEngine saves the best checkpoint and this step's one again,
            # synchronously: not while the latter is being written
            self.wait_for_save()
        super().after_val_epoch(runner, metrics)

    def _save(self, runner, saves: bool, parent_hook, *args) -> None:
        """Run MMEngine's hook method ``parent_hook(*args)``; when it saves
        a checkpoint (``saves``) and ``async_save`` is on, take the
        checkpoint (:meth:`before_save_checkpoint`) and write it in the
        background."""
        before = self.last_ckpt
        if saves and self._async:
            self.wait_for_save()
            self._taking = _HostCopies()
            try:
                with self._taking:
                    parent_hook(*args)
            except _CheckpointTaken as taken:
                self._start_write(runner, taken.snapshot)
                return
            finally:
                self._taking = None
        else:
            parent_hook(*args)
        if self.last_ckpt != before:  # saved synchronously by MMEngine
            self._prune()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Take the checkpoint of an asynchronous save (see the class
        docstring); other saves (``save_best``, other callers of
        ``runner.save_checkpoint``) go on as in MMEngine."""
        host_copies, self._taking = self._taking, None
        if host_copies is None:
            return
        hooks = runner.hooks
        for hook in hooks[hooks.index(self) + 1:]:
            hook.before_save_checkpoint(runner, checkpoint=checkpoint)
        host_copies.synchronize()
        try:
            # keep the fresh host copies; copy what training can change
            snapshot = copy.deepcopy(checkpoint, dict(host_copies.copies))
        except Exception as err:
            runner.logger.warning(
                f'AtomicCheckpointHook: cannot copy the checkpoint for a '
                f'background write ({type(err).__name__}: {err}); writing '
                f'{self.last_ckpt} synchronously')
            save_checkpoint(checkpoint, self.last_ckpt,
                            backend_args=self.backend_args)
            snapshot = None
        raise _CheckpointTaken(snapshot)

    def _start_write(self, runner, snapshot: Optional[dict]) -> None:
        pointer = osp.join(runner.work_dir, 'last_checkpoint')
        filepath = self.last_ckpt
        if snapshot is None:  # written already
            atomic_write_text(pointer, filepath)
            self._prune()
            return
        thread = threading.Thread(
            target=self._write,
            args=([snapshot], filepath, pointer),
            name=WRITER_THREAD_PREFIX + filepath)
        self._writer = thread
        thread.start()

    def _write(self, box: list, filepath: str, pointer: str) -> None:
        """The background thread: the checkpoint (``box.pop()``, dropped as
        soon as it is written), then ``last_checkpoint``, then pruning."""
        start = time.perf_counter()
        try:
            save_checkpoint(box.pop(), filepath,
                            backend_args=self.backend_args)
            atomic_write_text(pointer, filepath)
            self._prune()
        except BaseException as err:  # raised in the main thread later
            self._writer_error = (filepath, err)
            print_log(
                f'Writing the checkpoint {filepath} in the background '
                f'failed ({type(err).__name__}: {err}); last_checkpoint '
                'still names the previous complete checkpoint',
                logger='current', level=logging.ERROR)
        else:
            print_log(
                f'Checkpoint {filepath} written in the background in '
                f'{time.perf_counter() - start:.1f} s', logger='current')

    def wait_for_save(self) -> None:
        """Wait for the checkpoint being written in the background, if any.

        Raises:
            AsyncCheckpointError: naming the file, if that write (or an
                earlier one not yet reported) failed.
        """
        writer, self._writer = self._writer, None
        if writer is not None and writer.is_alive():
            print_log('Waiting for the background write of '
                      f'{writer.name[len(WRITER_THREAD_PREFIX):]}',
                      logger='current')
            writer.join()
        if self._writer_error is not None:
            filepath, err = self._writer_error
            self._writer_error = None
            raise AsyncCheckpointError(
                f'Saving the checkpoint {filepath} in the background failed '
                f'({type(err).__name__}: {err}); last_checkpoint names the '
                'previous complete checkpoint, which --resume continues '
                'from') from err

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
            try:
                os.remove(osp.join(self.out_dir, name))
            except FileNotFoundError:
                pass


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
