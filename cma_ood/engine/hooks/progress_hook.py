"""Time-based progress lines for the validation and test loops."""
import time
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmpretrain.registry import HOOKS


def format_progress(phase: str, done: int, total: int, elapsed: float,
                    images: int) -> str:
    """One progress line, e.g. ``test: 40/335 batches (12%), 10,240
    images, 1,024 img/s, 0:10 elapsed, ETA 1:12``.

    Args:
        phase: ``'val'`` or ``'test'``.
        done: batches done (>= 1); total: batches of the loop.
        elapsed: seconds since the first batch started.
        images: images done (this process).
    """
    def clock(seconds: float) -> str:
        minutes, sec = divmod(int(round(seconds)), 60)
        hours, minutes = divmod(minutes, 60)
        return (f'{hours}:{minutes:02d}:{sec:02d}' if hours else
                f'{minutes}:{sec:02d}')

    rate = images / elapsed if elapsed > 0 else float('inf')
    eta = elapsed / done * (total - done) if done else float('inf')
    return (f'{phase}: {done}/{total} batches ({100 * done / total:.0f}%), '
            f'{images:,} images, {rate:,.0f} img/s, {clock(elapsed)} '
            f'elapsed, ETA {clock(eta)}')


@HOOKS.register_module()
class ProgressHook(Hook):
    """Log the progress of the validation and test loops every
    ``interval_s`` seconds (and after the last batch), on the main process:
    MMEngine's ``LoggerHook`` logs them every ``interval`` iterations
    (100 in our runtime), i.e. a few times per MOS-size test run.

    Args:
        interval_s (float): seconds between two lines.
    """
    priority = 'BELOW_NORMAL'

    def __init__(self, interval_s: float = 10.0):
        if not interval_s > 0:
            raise ValueError(f'interval_s must be > 0, got {interval_s!r}')
        self.interval_s = float(interval_s)
        self._start: Optional[float] = None
        self._last = 0.0
        self._images = 0

    def _begin(self) -> None:
        self._start = None
        self._images = 0

    def _step(self, runner, phase: str, loader, batch_idx: int,
              data_batch) -> None:
        now = time.monotonic()
        if self._start is None:  # the first batch includes start-up work
            self._start = self._last = now
        # data samples, not inputs: a DecodeOnDevice batch may have no
        # decoded inputs at all
        batch = data_batch if isinstance(data_batch, dict) else {}
        samples = batch.get('data_samples')
        if samples is None:
            samples = batch.get('inputs', ())
        self._images += len(samples)
        done, total = batch_idx + 1, len(loader)
        if now - self._last >= self.interval_s or done == total:
            self._last = now
            if is_main_process():
                print_log(
                    format_progress(phase, done, total, now - self._start,
                                    self._images), logger='current')

    def before_val_epoch(self, runner) -> None:
        self._begin()

    def before_test_epoch(self, runner) -> None:
        self._begin()

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None) -> None:
        self._step(runner, 'val', runner.val_dataloader, batch_idx,
                   data_batch)

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None) -> None:
        self._step(runner, 'test', runner.test_dataloader, batch_idx,
                   data_batch)
