"""Stop training runs that would otherwise go silently wrong."""
import math
from typing import Optional

from mmengine.hooks import Hook
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS

from ..loops import ResumableEpochBasedTrainLoop


def _value(v) -> float:
    return float(v.detach().float().mean()) if hasattr(v, 'detach') \
        else float(v)


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training at the first iteration whose loss (or any logged loss
    part) is NaN or infinite.

    Runs before the checkpoint and logger hooks of the same iteration, so no
    checkpoint holds the weights of that step. Raises ``FloatingPointError``
    naming the iteration, the non-finite values, the last checkpoint and
    what to try.

    Args:
        interval (int): check every ``interval`` iterations. Defaults to 1.
    """
    priority = 'VERY_HIGH'

    def __init__(self, interval: int = 1):
        if interval < 1:
            raise ValueError(f'FiniteLossHook: interval must be >= 1, got '
                             f'{interval}')
        self.interval = interval

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        values = {k: _value(v) for k, v in outputs.items()}
        bad = {k: v for k, v in values.items() if not math.isfinite(v)}
        if not bad:
            return
        last = runner.message_hub.get_info('last_ckpt')
        resume = (f'resume from {last} with --resume' if last else
                  'restart the run')
        raise FloatingPointError(
            f'Non-finite loss at iteration {runner.iter + 1} (epoch '
            f'{runner.epoch + 1}, batch {batch_idx + 1}): ' +
            ', '.join(f'{k}={v}' for k, v in bad.items()) +
            '; training stopped. Lower the learning rate or clip gradients '
            '(optim_wrapper.clip_grad=dict(max_norm=1.0)), check the images '
            f'of this batch, then {resume}')


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
