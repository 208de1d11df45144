"""Read the logged losses from the GPU only when someone looks at them."""
from typing import Dict, List, Optional

import torch
from mmengine.hooks import CheckpointHook, LoggerHook, RuntimeInfoHook
from mmengine.utils import apply_to
from mmpretrain.registry import HOOKS


def host_read_due(runner, batch_idx: int, interval: Optional[int] = None,
                  with_logger: bool = True) -> bool:
    """Whether the training iteration ``batch_idx`` that just ended must
    bring its logged values to the host.

    True every ``interval`` iterations, at the ``LoggerHook``'s iterations
    (``with_logger``; counted in the epoch and over the run, as
    ``LoggerHook`` counts them), at the end of an epoch and of training, and
    at the iterations where a by-iteration ``CheckpointHook`` saves (its
    ``interval`` from ``save_begin``: the message hub's state goes into the
    checkpoint). Checkpoints saved elsewhere (validation's best checkpoint)
    are covered by the hooks' ``before_val`` and ``before_save_checkpoint``.
    Anything that reads the losses more often (e.g. a
    ``ReduceOnPlateauParamScheduler`` stepped by iteration on the training
    loss) needs MMEngine's ``RuntimeInfoHook``.
    """
    done, inner = runner.iter + 1, batch_idx + 1
    if interval is not None and done % interval == 0:
        return True
    for hook in runner.hooks:
        if isinstance(hook, LoggerHook) and with_logger:
            n = hook.interval
            if n > 0 and (done % n == 0 or inner % n == 0):
                return True
        elif isinstance(hook, CheckpointHook) and not hook.by_epoch \
                and hook.every_n_train_iters(runner, hook.interval,
                                             hook.save_begin):
            return True
    loader = runner.train_dataloader
    return inner == len(loader) or done >= runner.max_iters


@HOOKS.register_module()
class LazyRuntimeInfoHook(RuntimeInfoHook):
    """MMEngine's ``RuntimeInfoHook`` that reads the model's logged values
    (the losses and their parts) from the GPU in one go when they are
    needed, instead of after every iteration.

    ``RuntimeInfoHook`` calls ``.item()`` on each logged tensor after each
    training iteration. The first call waits until the GPU has finished
    that iteration, so the host cannot queue the next iteration's kernels
    while the GPU works, and the GPU idles while the host prepares them
    (docs/benchmarks.md). This hook keeps the tensors (detached) and writes
    them to the message hub in iteration order, all with one device
    synchronisation, at the iterations :func:`host_read_due` names: the
    logger's, the checkpoints', the last of each epoch, and before each
    validation; a checkpoint saved at any other time (e.g. validation's best
    checkpoint) gets the message hub read first. Between those the message
    hub holds the values of the last read, so what the logger prints and
    what a checkpoint stores are exactly as with ``RuntimeInfoHook``.

    Args:
        interval (int, optional): also read every ``interval`` iterations.
            Defaults to None (the logger's and checkpoints' iterations).
    """
    priority = 'VERY_HIGH'

    def __init__(self, interval: Optional[int] = None):
        if interval is not None and interval < 1:
            raise ValueError('LazyRuntimeInfoHook: interval must be >= 1 or '
                             f'None, got {interval}')
        self.interval = interval
        self._pending: List[Dict[str, object]] = []

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._pending = []

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if outputs is not None:
            self._pending.append({
                k: v.detach() if isinstance(v, torch.Tensor) else v
                for k, v in outputs.items()
            })
        if host_read_due(runner, batch_idx, self.interval):
            self.flush(runner)

    def flush(self, runner) -> None:
        """Write the values kept since the last read to the message hub."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        for outputs in _to_host(pending):
            for key, value in outputs.items():
                runner.message_hub.update_scalar(f'train/{key}', value)

    def before_val(self, runner) -> None:
        self.flush(runner)  # validation inside training (and its hooks)
        super().before_val(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._pending and 'message_hub' in checkpoint:
            # saved between two reads: store the complete history
            self.flush(runner)
            checkpoint['message_hub'] = apply_to(
                runner.message_hub.state_dict(),
                lambda x: hasattr(x, 'cpu'), lambda x: x.cpu())

    def after_train(self, runner) -> None:
        self.flush(runner)  # e.g. a loop stopped early
        super().after_train(runner)


def _to_host(pending: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """``pending`` with its one-element tensors as Python numbers, read
    from each device in one copy."""
    slots = [(i, k) for i, outputs in enumerate(pending)
             for k, v in outputs.items()
             if isinstance(v, torch.Tensor) and v.numel() == 1]
    out = [dict(outputs) for outputs in pending]
    by_device: Dict[torch.device, list] = {}
    for i, k in slots:
        by_device.setdefault(pending[i][k].device, []).append((i, k))
    for slots_of_device in by_device.values():
        values = torch.stack([
            pending[i][k].reshape(()).double() for i, k in slots_of_device
        ]).tolist()
        for (i, k), value in zip(slots_of_device, values):
            out[i][k] = value
    return out
