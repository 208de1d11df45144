"""LazyRuntimeInfoHook and host_read_due: the logged losses reach the
message hub exactly as with MMEngine's RuntimeInfoHook, read from the
device only at the iterations where someone looks at them."""
import types

import pytest
import torch
from mmengine.hooks import CheckpointHook, LoggerHook, RuntimeInfoHook
from mmengine.logging import MessageHub
from mmengine.runner import Runner

import cma_ood  # noqa: F401
from cma_ood.engine.hooks import LazyRuntimeInfoHook, host_read_due

from _helpers import small_cfg


def fake_runner(hooks, epoch_len, max_iters, name):
    return types.SimpleNamespace(
        hooks=hooks, train_dataloader=[None] * epoch_len,
        max_iters=max_iters, iter=0,
        message_hub=MessageHub.get_instance(name))


def due_iterations(runner, epoch_len, max_iters, interval=None,
                   with_logger=True):
    due = []
    for it in range(max_iters):
        runner.iter = it
        if host_read_due(runner, it % epoch_len, interval, with_logger):
            due.append(it + 1)
    return due


def test_due_at_logger_checkpoint_and_epoch_ends():
    # logger every 4 (in the epoch and over the run), by-iteration
    # checkpoints every 6, epochs of 10 iterations, 25 in all
    hooks = [LoggerHook(interval=4),
             CheckpointHook(interval=6, by_epoch=False)]
    runner = fake_runner(hooks, 10, 25, 'due_a')
    expected = [i for i in range(1, 26)
                if i % 4 == 0 or i % 6 == 0 or ((i - 1) % 10 + 1) % 4 == 0
                or ((i - 1) % 10 + 1) % 6 == 0 or i % 10 == 0 or i == 25]
    assert due_iterations(runner, 10, 25) == expected
    assert 14 in expected and 13 not in expected  # batch 4 of epoch 2
    # an epoch-based checkpoint does not add iterations; an explicit
    # interval adds to the logger's, or (FiniteLossHook's) replaces it
    hooks = [LoggerHook(interval=4), CheckpointHook(interval=6)]
    runner = fake_runner(hooks, 10, 25, 'due_b')
    assert due_iterations(runner, 10, 25, interval=7) == [
        i for i in range(1, 26) if i % 7 == 0 or i % 4 == 0
        or ((i - 1) % 10 + 1) % 4 == 0 or i % 10 == 0 or i == 25]
    assert due_iterations(runner, 10, 25, interval=7, with_logger=False) == [
        7, 10, 14, 20, 21, 25]
    # CheckpointHook's save_begin: saves (and reads) at 3, 8, 13, ...
    hooks = [CheckpointHook(interval=5, by_epoch=False, save_begin=3)]
    runner = fake_runner(hooks, 100, 25, 'due_c')
    assert due_iterations(runner, 100, 25, with_logger=False) == [
        3, 8, 13, 18, 23, 25]


def stub_runner(name, epoch_len=10, max_iters=10):
    runner = fake_runner([LoggerHook(interval=3)], epoch_len, max_iters, name)
    return runner


def test_values_wait_until_due_then_arrive_in_order():
    runner = stub_runner('lazy_order')
    hook = LazyRuntimeInfoHook()
    losses = [torch.tensor(0.5 + i, dtype=torch.float32) for i in range(5)]
    for it, loss in enumerate(losses):
        runner.iter = it
        hook.after_train_iter(runner, it, outputs=dict(
            loss=loss, acc=float(it), n=torch.tensor(it)))
        scalars = runner.message_hub.log_scalars
        if it < 2:  # iterations 1, 2: nothing read yet
            assert 'train/loss' not in scalars
    buf = runner.message_hub.log_scalars['train/loss']
    # iterations 1-3 read at the 3rd; 4 and 5 are still on the device
    assert list(buf.data[0]) == [0.5, 1.5, 2.5]
    assert list(runner.message_hub.log_scalars['train/acc'].data[0]) == [
        0.0, 1.0, 2.0]
    hook.flush(runner)
    assert list(buf.data[0]) == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert list(runner.message_hub.log_scalars['train/n'].data[0]) == [
        0, 1, 2, 3, 4]


def test_same_values_as_runtime_info_hook_bf16_and_eager():
    """Exactly the values RuntimeInfoHook's .item() gives, whatever the
    dtype (the read goes through float64, which holds each exactly)."""
    values = [torch.tensor(1 / 3, dtype=d)
              for d in (torch.float32, torch.bfloat16, torch.float16)]
    eager = stub_runner('eager_vals')
    lazy = stub_runner('lazy_vals')
    hook = LazyRuntimeInfoHook(interval=100)
    for it, v in enumerate(values):
        outputs = dict(loss=v)
        eager.iter = lazy.iter = it
        RuntimeInfoHook().after_train_iter(eager, it, outputs=outputs)
        hook.after_train_iter(lazy, it, outputs=outputs)
    hook.flush(lazy)
    assert list(lazy.message_hub.log_scalars['train/loss'].data[0]) == list(
        eager.message_hub.log_scalars['train/loss'].data[0])


def test_validation_and_other_checkpoints_read_first():
    """A validation inside training, and a checkpoint saved between two
    reads (e.g. validation's best checkpoint), get the complete history."""
    runner = stub_runner('lazy_val')
    hook = LazyRuntimeInfoHook(interval=100)
    hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(2.0)))
    hook.before_val(runner)
    assert list(runner.message_hub.log_scalars['train/loss'].data[0]) == [2.0]
    runner.iter = 1
    hook.after_train_iter(runner, 1, outputs=dict(loss=torch.tensor(3.0)))
    stale = dict(message_hub=runner.message_hub.state_dict())
    hook.before_save_checkpoint(runner, stale)
    buf = stale['message_hub']['log_scalars']['train/loss']
    assert list(buf.data[0]) == [2.0, 3.0]
    untouched = dict(meta=1)  # nothing pending: left as it is
    hook.before_save_checkpoint(runner, untouched)
    assert untouched == dict(meta=1)


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match='interval must be >= 1 or None'):
        LazyRuntimeInfoHook(interval=0)


@pytest.mark.usefixtures('single_thread')
def test_training_logs_and_checkpoints_the_same_history(tmp_path):
    """A real run with the logger every 5 iterations: the message hub (what
    the logger prints, what each checkpoint stores) holds the same loss
    history with either hook."""
    histories = {}
    for hook in ('RuntimeInfoHook', 'LazyRuntimeInfoHook'):
        cfg = small_cfg(tmp_path / hook, **{
            'default_hooks.runtime_info': dict(type=hook),
            'default_hooks.logger.interval': 5})
        runner = Runner.from_cfg(cfg)
        runner.train()
        assert type(runner.hooks[0]).__name__ == hook
        scalars = runner.message_hub.log_scalars
        histories[hook] = {
            k: list(scalars[k].data[0]) for k in scalars
            if k in ('train/loss', 'train/logit_scale')}
        ckpt = torch.load(tmp_path / hook / 'epoch_2.pth',
                          weights_only=False)
        histories[hook]['ckpt'] = list(
            ckpt['message_hub']['log_scalars']['train/loss'].data[0])
    eager, lazy = histories.values()
    assert len(eager['train/loss']) == 12  # 2 epochs of 6 iterations
    assert lazy == eager
