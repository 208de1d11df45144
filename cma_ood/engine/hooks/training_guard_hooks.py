"""Stop training runs that would otherwise go silently wrong."""
import math
from typing import List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS

from ..loops import ResumableEpochBasedTrainLoop
from .lazy_runtime_info_hook import host_read_due


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training at the first iteration whose loss (or any logged loss
    part) is NaN or infinite, before any checkpoint stores its weights.

    Checking means reading the losses from the GPU, which makes the host
    wait for the GPU to finish the iteration (docs/benchmarks.md), so the
    hook keeps each iteration's finiteness on the device and reads it at
    the iterations :func:`host_read_due` names: every ``interval``
    iterations (by default the logger's), at each by-iteration checkpoint,
    at the end of each epoch; and before each validation and each
    checkpoint saved at another time. It runs before the checkpoint and
    logger hooks of the same iteration, so no checkpoint holds the weights
    of a non-finite step and no validation runs on them. Raises
    ``FloatingPointError`` naming the first non-finite iteration, its
    values, the last checkpoint and what to try.

    Args:
        interval (int, optional): read every ``interval`` iterations
            (1: after each iteration, the loop then waits for the GPU each
            time). Defaults to None: at the logger's interval.
    """
    priority = 'VERY_HIGH'

    def __init__(self, interval: Optional[int] = None):
        if interval is not None and interval < 1:
            raise ValueError(f'FiniteLossHook: interval must be >= 1 or '
                             f'None, got {interval}')
        self.interval = interval
        self._pending: List[tuple] = []

    def before_train(self, runner) -> None:
        self._pending = []

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if outputs:
            values = {
                k: v.detach() if isinstance(v, torch.Tensor) else v
                for k, v in outputs.items()
            }
            self._pending.append(
                (runner.iter + 1, runner.epoch + 1, batch_idx + 1, values))
        if host_read_due(runner, batch_idx, self.interval,
                         with_logger=self.interval is None):
            self.check(runner)

    def before_val(self, runner) -> None:
        self.check(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.check(runner)  # raising here keeps the checkpoint unwritten

    def after_train(self, runner) -> None:
        self.check(runner)

    def check(self, runner) -> None:
        """Raise for the first non-finite iteration kept since the last
        check."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        flags = [_all_finite(values) for *_, values in pending]
        tensors = [f for f in flags if isinstance(f, torch.Tensor)]
        host = iter(torch.stack([t.to(tensors[0].device) for t in tensors
                                 ]).tolist()) if tensors else None
        flags = [next(host) if isinstance(f, torch.Tensor) else f
                 for f in flags]
        if all(flags):
            return
        it, epoch, batch, values = pending[flags.index(False)]
        bad = {k: v for k, v in ((k, _value(v)) for k, v in values.items())
               if not math.isfinite(v)}
        last = runner.message_hub.get_info('last_ckpt')
        resume = (f'resume from {last} with --resume' if last else
                  'restart the run')
        raise FloatingPointError(
            f'Non-finite loss at iteration {it} (epoch {epoch}, batch '
            f'{batch}): ' + ', '.join(f'{k}={v}' for k, v in bad.items()) +
            '; training stopped. Lower the learning rate or clip gradients '
            '(optim_wrapper.clip_grad=dict(max_norm=1.0)), check the images '
            f'of this batch, then {resume}')


def _value(v) -> float:
    return float(v.float().mean()) if isinstance(v, torch.Tensor) \
        else float(v)


def _all_finite(values: dict):
    """Whether every value is finite: a bool tensor on the values' device
    when some are tensors (nothing is read from the device), else a bool."""
    if not all(math.isfinite(_value(v)) for v in values.values()
               if not isinstance(v, torch.Tensor)):
        return False
    flags = [torch.isfinite(v).all() for v in values.values()
             if isinstance(v, torch.Tensor)]
    if not flags:
        return True
    return torch.stack([f.to(flags[0].device) for f in flags]).all()


@HOOKS.register_module()
class ResumeCheckHook(Hook):
    """Refuse to resume in the middle of an epoch with a loop that would
    train that epoch's first batches twice.

    MMEngine's ``EpochBasedTrainLoop`` restarts an epoch from its first
    batch; resumed from an iteration checkpoint it would repeat the batches
    done before the crash and run past the planned number of iterations.
    :class:`~cma_ood.engine.ResumableEpochBasedTrainLoop` continues exactly.
    """
    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if not isinstance(loop, EpochBasedTrainLoop) or isinstance(
                loop, ResumableEpochBasedTrainLoop):
            return
        done = runner.iter - runner.epoch * len(loop.dataloader)
        if done != 0:
            raise RuntimeError(
                f'Resuming at iteration {runner.iter}, batch {done} of epoch '
                f'{runner.epoch + 1}: {type(loop).__name__} would train the '
                f'{done} batches already done in that epoch again; set '
                "train_cfg = dict(type='ResumableEpochBasedTrainLoop', "
                'max_epochs=...) (without by_epoch) in the config, or resume '
                'from an epoch checkpoint')
