"""Fill in CMA's cycle length from the run's training set."""
from mmengine.dist import get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS

from ..schedulers import CMAWarmupCosineLR, cma_cycle_iters


def _schedulers(param_schedulers):
    """Flatten the runner's schedulers (a list, or a dict of lists)."""
    if param_schedulers is None:
        return []
    if isinstance(param_schedulers, dict):
        return [s for group in param_schedulers.values() for s in group]
    return list(param_schedulers)


@HOOKS.register_module()
class CMAScheduleHook(Hook):
    """Before training, set ``cycle_iters = epochs * (N // B + 1)`` on every
    :class:`~cma_ood.engine.schedulers.CMAWarmupCosineLR` left at
    ``cycle_iters=None``, as CMA's training script does: N = the training
    set's length, B = the global batch (batch size per process x world
    size), epochs = ``train_cfg.max_epochs``.

    Schedulers with an explicit ``cycle_iters`` are left alone, as is a run
    with none of them. Resuming sets the same value again.
    """
    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        pending = [
            s for s in _schedulers(runner.param_schedulers)
            if isinstance(s, CMAWarmupCosineLR) and s.cycle_iters is None
        ]
        if not pending:
            return
        loader = runner.train_dataloader
        max_epochs = getattr(runner.train_loop, 'max_epochs', None)
        if not isinstance(max_epochs, int) or loader.batch_size is None:
            raise ValueError(
                'CMAScheduleHook needs an epoch-based train loop and a '
                'dataloader with a batch_size; otherwise set '
                'CMAWarmupCosineLR.cycle_iters explicitly')
        num_samples = len(loader.dataset)
        batch = loader.batch_size * get_world_size()
        cycle = cma_cycle_iters(max_epochs, num_samples, batch)
        if cycle <= pending[0].warmup_iters:
            raise ValueError(
                f'CMA schedule: the cycle of {cycle} iterations ({max_epochs} '
                f'epochs x ({num_samples} // {batch} + 1)) is not longer '
                f'than the {pending[0].warmup_iters} warm-up iterations; '
                'lower warmup_iters')
        for scheduler in pending:
            scheduler.cycle_iters = cycle
        print_log(
            f'CMA schedule: {pending[0].warmup_iters} warm-up iterations, '
            f'cosine cycle of {cycle} iterations = {max_epochs} epochs x '
            f'({num_samples} images // global batch {batch} + 1)',
            logger='current')
