"""The learning-rate schedules of the published CMA and PLP code.

Both are "linear warm-up from 0, then cosine to 0", stepped once per
iteration, but they differ in details that mmengine's ``LinearLR`` +
``CosineAnnealingLR`` chain cannot express (a warm-up that starts at lr 0,
a cosine whose length is not the run's length). The pure factor functions
give ``lr_t / max_lr`` at iteration ``t`` (0-based, the iteration whose
optimizer step uses that lr); the registered schedulers apply them to the
optimizer's lr (``optim_wrapper.optimizer.lr`` is the peak, so
``--auto-scale-lr`` scales it as usual).

- :func:`cma_lr_factor`: CMA's ``CosineAnnealingWarmupRestarts``
  (``utils/train_utils.py``: ``first_cycle_steps = epochs * (N // B + 1)``,
  ``warmup_steps = 500``, ``min_lr = 0``, ``cycle_mult = gamma = 1``).
- :func:`plp_lr_factor`: PLP's ``cosine_scheduler_iter`` (``utils.py``:
  ``np.linspace(0, base, W)`` over ``W = int(0.1 * T)`` warm-up iterations,
  then a cosine over the remaining ``T - W``).
"""
import math
from typing import Optional

from mmengine.optim import _ParamScheduler
from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF
from mmpretrain.registry import PARAM_SCHEDULERS


def _check_iters(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) \
            or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')
    return value


def cma_cycle_iters(max_epochs: int, num_samples: int,
                    global_batch_size: int) -> int:
    """CMA's cycle length ``S = epochs * (N // B + 1)``.

    Args:
        max_epochs: training epochs.
        num_samples: N, training images.
        global_batch_size: B, images per optimizer step over all processes.
    """
    _check_iters(max_epochs, 'max_epochs', 1)
    _check_iters(num_samples, 'num_samples', 1)
    _check_iters(global_batch_size, 'global_batch_size', 1)
    return max_epochs * (num_samples // global_batch_size + 1)


def cma_lr_factor(step: int, warmup_iters: int, cycle_iters: int) -> float:
    """``lr_t / max_lr`` of CMA's ``CosineAnnealingWarmupRestarts``.

    With ``w = warmup_iters``, ``S = cycle_iters`` and ``c = t mod S`` (the
    step within the current cycle; a run of ``epochs`` epochs ends before
    the first restart)::

        c / w                                    for c < w   (0 at t = 0)
        (1 + cos(pi * (c - w) / (S - w))) / 2    otherwise

    Args:
        step: t >= 0, the 0-based iteration.
        warmup_iters: w >= 0.
        cycle_iters: S > w.

    Returns:
        The factor in [0, 1].
    """
    _check_iters(step, 'step', 0)
    _check_iters(warmup_iters, 'warmup_iters', 0)
    _check_iters(cycle_iters, 'cycle_iters', warmup_iters + 1)
    c = step % cycle_iters
    if c < warmup_iters:
        return c / warmup_iters
    return (1 + math.cos(math.pi * (c - warmup_iters) /
                         (cycle_iters - warmup_iters))) / 2


def plp_warmup_iters(total_iters: int, warmup_ratio: float = 0.1) -> int:
    """PLP's warm-up length ``int(total_iters * warmup_ratio)``."""
    _check_iters(total_iters, 'total_iters', 1)
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(
            f'warmup_ratio must be in [0, 1), got {warmup_ratio!r}')
    return int(total_iters * warmup_ratio)


def plp_lr_factor(step: int, total_iters: int,
                  warmup_ratio: float = 0.1) -> float:
    """``lr_t / max_lr`` of PLP's ``cosine_scheduler_iter`` (final value 0,
    warm-up start value 0).

    With ``T = total_iters`` and ``W = int(T * warmup_ratio)``::

        t / (W - 1)                              for t < W   (linspace(0, 1, W))
        (1 + cos(pi * (t - W) / (T - W))) / 2    for W <= t < T

    (``W == 1``: the single warm-up step runs at 0.) The cosine never
    reaches 0 within the run; its last value is at ``t = T - 1``.

    Args:
        step: t in [0, T), the 0-based iteration.
        total_iters: T >= 1, all iterations of the run.
        warmup_ratio: share of T spent warming up, in [0, 1).
    """
    warmup = plp_warmup_iters(total_iters, warmup_ratio)
    _check_iters(step, 'step', 0)
    if step >= total_iters:
        raise ValueError(
            f'step {step} is past the schedule of {total_iters} iterations')
    if step < warmup:
        return step / (warmup - 1) if warmup > 1 else 0.0
    return (1 + math.cos(math.pi * (step - warmup) /
                         (total_iters - warmup))) / 2


class _FactorLR(LRSchedulerMixin, _ParamScheduler):
    """lr = initial lr * ``self.factor(self.last_step)`` every step, stepped
    by iteration."""

    def __init__(self, optimizer, begin: int, end: int, last_step: int,
                 verbose: bool):
        super().__init__(
            optimizer,
            begin=begin,
            end=end,
            last_step=last_step,
            by_epoch=False,
            verbose=verbose)

    def factor(self, step: int) -> float:
        raise NotImplementedError

    def _get_value(self):
        f = self.factor(self.last_step)
        return [base * f for base in self.base_values]


@PARAM_SCHEDULERS.register_module()
class CMAWarmupCosineLR(_FactorLR):
    """CMA's learning-rate schedule, stepped every iteration
    (:func:`cma_lr_factor`).

    ``cycle_iters=None`` (the default) means CMA's ``epochs * (N // B + 1)``
    for the run's training set (N images) and global batch B; it is filled
    in by :class:`~cma_ood.engine.hooks.CMAScheduleHook` before the first
    iteration (the configs add that hook). An explicit int is used as is.

    Args:
        optimizer: the wrapped optimizer; its lr is the peak lr.
        warmup_iters (int): linear warm-up from lr 0 (CMA: 500).
        cycle_iters (int, optional): S, see above.
        begin / end / last_step / verbose: as mmengine's schedulers.
        by_epoch (bool): must be given as False: the schedule is per
            iteration, and MMEngine's runner sets a missing ``end`` to
            ``max_epochs`` for schedulers configured without it, which
            would silently stop the schedule after a few iterations.
    """

    def __init__(self,
                 optimizer,
                 warmup_iters: int = 500,
                 cycle_iters: Optional[int] = None,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False):
        if by_epoch:
            raise ValueError('CMAWarmupCosineLR is stepped every iteration; '
                             'set by_epoch=False')
        self.warmup_iters = _check_iters(warmup_iters, 'warmup_iters', 0)
        if cycle_iters is not None:
            _check_iters(cycle_iters, 'cycle_iters', warmup_iters + 1)
        self.cycle_iters = cycle_iters
        super().__init__(optimizer, begin, end, last_step, verbose)

    def factor(self, step: int) -> float:
        # mmengine counts last_step from ``begin``
        if self.cycle_iters is None:
            if step < self.warmup_iters:
                return step / self.warmup_iters
            raise RuntimeError(
                'CMAWarmupCosineLR: cycle_iters was never set. Add '
                "dict(type='CMAScheduleHook') to custom_hooks (it sets "
                'epochs * (N // B + 1)) or give cycle_iters explicitly')
        return cma_lr_factor(step, self.warmup_iters, self.cycle_iters)


@PARAM_SCHEDULERS.register_module()
class PLPWarmupCosineLR(_FactorLR):
    """PLP's learning-rate schedule, stepped every iteration
    (:func:`plp_lr_factor`) over the scheduler's ``[begin, end)``.

    Configure it by epochs, converted to iterations with the run's
    dataloader length, as PLP's ``steps_per_epoch * num_epochs``::

        dict(type='PLPWarmupCosineLR', warmup_ratio=0.1, by_epoch=True,
             begin=0, end=100, convert_to_iter_based=True)

    Args:
        optimizer: the wrapped optimizer; its lr is the peak lr.
        warmup_ratio (float): share of the iterations spent warming up.
        begin / end: the iterations the schedule spans (``end`` finite).
        by_epoch (bool): True only with ``convert_to_iter_based=True``
            (the epochs become iterations); built directly, give
            iterations and ``by_epoch=False``.
        last_step / verbose: as mmengine's schedulers.
    """

    def __init__(self,
                 optimizer,
                 warmup_ratio: float = 0.1,
                 begin: int = 0,
                 end: int = INF,
                 last_step: int = -1,
                 by_epoch: bool = True,
                 verbose: bool = False):
        if by_epoch:
            raise ValueError(
                'PLPWarmupCosineLR is stepped every iteration; configure it '
                'with by_epoch=True and convert_to_iter_based=True (or give '
                'iterations with by_epoch=False)')
        if end == INF:
            raise ValueError('PLPWarmupCosineLR needs a finite end')
        self.warmup_ratio = float(warmup_ratio)
        plp_warmup_iters(end - begin, self.warmup_ratio)  # validate
        super().__init__(optimizer, begin, end, last_step, verbose)

    @classmethod
    def build_iter_from_epoch(cls,
                              *args,
                              begin=0,
                              end=INF,
                              by_epoch=True,
                              epoch_length=None,
                              **kwargs):
        """An iteration-based instance from an epoch-based config."""
        if not by_epoch:
            raise ValueError('convert_to_iter_based needs by_epoch=True')
        if not epoch_length or epoch_length < 1:
            raise ValueError(
                f'epoch_length must be a positive int, got {epoch_length!r}')
        if end == INF:
            raise ValueError('PLPWarmupCosineLR needs a finite end')
        return cls(
            *args,
            begin=int(begin * epoch_length),
            end=int(end * epoch_length),
            by_epoch=False,
            **kwargs)

    def factor(self, step: int) -> float:
        return plp_lr_factor(step, self.end - self.begin, self.warmup_ratio)
