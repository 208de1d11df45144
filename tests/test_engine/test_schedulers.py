"""The published learning-rate schedules of CMA and PLP, iteration by
iteration: the pure factor functions against the closed forms, the
registered schedulers inside an MMEngine run, and CMA's cycle length
``epochs * (N // B + 1)`` taken from the run's training set."""
import math

import numpy as np
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner
from torch.utils.data import Dataset

import cma_ood  # noqa: F401
from cma_ood.engine import CMAWarmupCosineLR, PLPWarmupCosineLR
from cma_ood.engine.hooks import CMAScheduleHook
from cma_ood.engine.schedulers import (cma_cycle_iters, cma_lr_factor,
                                       plp_lr_factor)


def cma_published(t, warmup, cycle):
    """REFERENCE.md section 1: max_lr * t / 500 for t < 500, then
    max_lr * (1 + cos(pi * (t - 500) / (S - 500))) / 2 (one cycle)."""
    if t < warmup:
        return t / warmup
    return (1 + math.cos(math.pi * (t - warmup) / (cycle - warmup))) / 2


def plp_published(total, ratio):
    """PLP's cosine_scheduler_iter(base 1, final 0, start_warmup_value 0)
    restated with numpy: linspace warm-up, then the cosine over the rest."""
    warmup = int(total * ratio)
    ramp = np.linspace(0, 1, warmup) if warmup > 0 else np.array([])
    rest = np.arange(total - warmup)
    return np.concatenate([ramp, 0.5 * (1 + np.cos(np.pi * rest / rest.size))])


def test_cma_factor_closed_form():
    warmup, cycle = 500, 25030
    assert cma_lr_factor(0, warmup, cycle) == 0.0  # the first step: lr 0
    assert cma_lr_factor(1, warmup, cycle) == 1 / 500
    assert cma_lr_factor(499, warmup, cycle) == 499 / 500
    assert cma_lr_factor(500, warmup, cycle) == 1.0
    # half-way through the cosine
    mid = warmup + (cycle - warmup) // 2
    assert cma_lr_factor(mid, warmup, cycle) == pytest.approx(0.5, abs=1e-12)
    for t in range(0, cycle, 97):
        assert cma_lr_factor(t, warmup, cycle) == pytest.approx(
            cma_published(t, warmup, cycle), rel=1e-15, abs=1e-18)


def test_cma_factor_restarts_after_a_cycle():
    # cycle_mult = gamma = 1: the next cycle repeats warm-up and cosine
    for t in range(30):
        assert cma_lr_factor(t + 30, 5, 30) == cma_lr_factor(t, 5, 30)


def test_cma_differs_from_the_old_whole_run_cosine():
    """The previous configs (LinearLR (t+1)/500 times a cosine over the
    whole run) differ from the published rule by more than 1% of the peak
    on an ImageNet-size run; the new factor is the published one."""
    warmup, cycle = 500, cma_cycle_iters(10, 1281167, 512)
    assert cycle == 25030
    old = [min(t + 1, 500) / 500 * (1 + math.cos(math.pi * t / 25030)) / 2
           for t in range(cycle)]
    new = [cma_lr_factor(t, warmup, cycle) for t in range(cycle)]
    assert max(abs(a - b) for a, b in zip(old, new)) > 0.01
    assert all(n == pytest.approx(cma_published(t, warmup, cycle), abs=1e-15)
               for t, n in enumerate(new))


def test_cma_cycle_iters_is_epochs_times_n_floordiv_b_plus_one():
    assert cma_cycle_iters(10, 1281167, 512) == 10 * 2503
    # divisible: still + 1 (one more than the iterations per epoch)
    assert cma_cycle_iters(3, 36, 4) == 3 * 10
    with pytest.raises(ValueError, match='global_batch_size'):
        cma_cycle_iters(3, 36, 0)


@pytest.mark.parametrize('total,ratio', [(20, 0.1), (1000, 0.1), (7, 0.1),
                                         (30, 0.0), (12, 0.25)])
def test_plp_factor_equals_the_published_array(total, ratio):
    ref = plp_published(total, ratio)
    got = [plp_lr_factor(t, total, ratio) for t in range(total)]
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)


def test_plp_factor_rejects_steps_past_the_run():
    with pytest.raises(ValueError, match='past the schedule'):
        plp_lr_factor(20, 20)


# ----------------------------------------------------- inside a real run
class _Toy(BaseModel):

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.w(torch.stack(inputs).float().view(-1, 1))
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


class _Numbers(Dataset):

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return dict(inputs=torch.tensor(float(i)))


class _RecordLR(Hook):
    """The lr each optimizer step of the run uses."""

    def __init__(self):
        self.lrs = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.lrs.append(runner.optim_wrapper.get_lr()['lr'][0])


def run_toy(tmp_path, num_samples, batch_size, epochs, scheduler,
            with_hook=True):
    record = _RecordLR()
    hooks = [record] + ([CMAScheduleHook()] if with_hook else [])
    runner = Runner(
        model=_Toy(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=_Numbers(num_samples),
            batch_size=batch_size,
            sampler=dict(type='DefaultSampler', shuffle=False),
            collate_fn=dict(type='pseudo_collate'),
            num_workers=0),
        optim_wrapper=dict(
            type=OptimWrapper, optimizer=dict(type='SGD', lr=0.2)),
        param_scheduler=scheduler,
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        custom_hooks=hooks,
        default_hooks=dict(checkpoint=None, logger=None),
        default_scope='mmpretrain',
        experiment_name=f'schedule-{tmp_path.name}')
    runner.train()
    return runner, record.lrs


@pytest.mark.parametrize('num_samples', [37, 36])
def test_cma_scheduler_in_a_run_follows_the_published_rule(
        tmp_path, num_samples):
    batch, epochs, warmup = 4, 3, 5
    runner, lrs = run_toy(
        tmp_path, num_samples, batch, epochs,
        dict(type='CMAWarmupCosineLR', warmup_iters=warmup, by_epoch=False))
    cycle = epochs * (num_samples // batch + 1)
    scheduler, = runner.param_schedulers
    assert isinstance(scheduler, CMAWarmupCosineLR)
    assert scheduler.cycle_iters == cycle == 30
    assert len(lrs) == epochs * math.ceil(num_samples / batch)
    for t, lr in enumerate(lrs):
        assert lr == pytest.approx(0.2 * cma_published(t, warmup, cycle),
                                   rel=1e-12, abs=1e-15), t
    assert lrs[0] == 0.0


def test_cma_scheduler_without_the_hook_says_what_to_add(tmp_path):
    with pytest.raises(RuntimeError, match='CMAScheduleHook'):
        run_toy(tmp_path, 37, 4, 3,
                dict(type='CMAWarmupCosineLR', warmup_iters=5,
                     by_epoch=False),
                with_hook=False)


def test_cma_scheduler_explicit_cycle_is_kept(tmp_path):
    runner, lrs = run_toy(
        tmp_path, 37, 4, 3,
        dict(type='CMAWarmupCosineLR', warmup_iters=5, cycle_iters=50,
             by_epoch=False))
    assert runner.param_schedulers[0].cycle_iters == 50
    assert lrs[20] == pytest.approx(0.2 * cma_published(20, 5, 50))


def test_cma_scheduler_state_round_trip():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CMAWarmupCosineLR(opt, warmup_iters=2, cycle_iters=10,
                              by_epoch=False)
    for _ in range(4):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched2 = CMAWarmupCosineLR(opt2, warmup_iters=2, by_epoch=False)
    sched2.load_state_dict(state)
    assert sched2.cycle_iters == 10 and sched2.last_step == 4
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]['lr'] == pytest.approx(
        cma_published(5, 2, 10))


def test_plp_scheduler_in_a_run_follows_the_published_array(tmp_path):
    runner, lrs = run_toy(
        tmp_path, 37, 4, 3,
        dict(type='PLPWarmupCosineLR', warmup_ratio=0.1, by_epoch=True,
             begin=0, end=3, convert_to_iter_based=True))
    assert isinstance(runner.param_schedulers[0], PLPWarmupCosineLR)
    total = 3 * math.ceil(37 / 4)  # steps_per_epoch * num_epochs
    np.testing.assert_allclose(lrs, 0.2 * plp_published(total, 0.1),
                               rtol=1e-12, atol=1e-15)


def test_schedulers_reject_by_epoch_stepping():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    # by_epoch must be given as False: without it MMEngine's runner would
    # end the schedule at iteration max_epochs
    with pytest.raises(ValueError, match='every iteration'):
        CMAWarmupCosineLR(opt)
    with pytest.raises(ValueError, match='every iteration'):
        PLPWarmupCosineLR(opt, end=10)
    with pytest.raises(ValueError, match='finite end'):
        PLPWarmupCosineLR(opt, by_epoch=False)
    with pytest.raises(ValueError, match='cycle_iters'):
        CMAWarmupCosineLR(opt, warmup_iters=10, cycle_iters=10,
                          by_epoch=False)


def test_cma_scheduler_without_by_epoch_in_a_run_fails_loudly(tmp_path):
    with pytest.raises(ValueError, match='by_epoch=False'):
        run_toy(tmp_path, 37, 4, 3,
                dict(type='CMAWarmupCosineLR', warmup_iters=5))
