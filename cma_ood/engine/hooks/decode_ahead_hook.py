"""Decode the next GPU-decoded batch while the model runs on this one."""
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


class DecodeAheadLoader:
    """Iterate ``loader``, running ``decode`` on each batch one batch ahead
    in a background thread, on its own CUDA stream.

    While the loop works on batch ``k`` (kernels queued on the current
    stream), the thread decodes batch ``k + 1`` (nvJPEG's host-side Huffman
    decoding, the crops and resizes) on a side stream; the batch is handed
    to the loop after the current stream has been made to wait for that
    work, so the images are complete before anything reads them. Batches
    that ``needs(batch)`` rejects pass through unchanged. An error of
    ``decode`` (a broken file) is raised where its batch would have been
    yielded. Other attributes (``dataset``, ``sampler``, ``batch_size``,
    ...) are the wrapped loader's, and ``len()`` is its length.

    Args:
        loader: the dataloader.
        decode: ``batch -> batch`` with its images on ``device``.
        needs: which batches ``decode`` applies to.
        device: the device ``decode`` works on (on a CPU device the thread
            runs without streams).
    """

    def __init__(self, loader: Iterable, decode: Callable,
                 needs: Callable[[dict], bool], device: torch.device):
        self.loader = loader
        self._decode = decode
        self._needs = needs
        self._device = torch.device(device)

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):
        if name == 'loader':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def _run(self, stream, batch):
        if stream is None:
            return self._decode(batch), None
        with torch.cuda.device(self._device), torch.cuda.stream(stream):
            out = self._decode(batch)
            done = torch.cuda.Event()
            done.record(stream)
        return out, done

    def _resolve(self, item):
        if not isinstance(item, Future):
            return item  # passed through
        batch, done = item.result()
        if done is not None:
            current = torch.cuda.current_stream(self._device)
            current.wait_event(done)
            for value in batch.values():
                # the side stream's allocation is now used on this one
                if torch.is_tensor(value) and value.is_cuda:
                    value.record_stream(current)
        return batch

    def __iter__(self):
        stream = torch.cuda.Stream(self._device) \
            if self._device.type == 'cuda' else None
        with ThreadPoolExecutor(1, thread_name_prefix='decode_ahead') as pool:
            pending = None
            for batch in self.loader:
                if isinstance(batch, dict) and self._needs(batch):
                    batch = pool.submit(self._run, stream, batch)
                if pending is not None:
                    yield self._resolve(pending)
                pending = batch
            if pending is not None:
                yield self._resolve(pending)


@HOOKS.register_module()
class DecodeAheadHook(Hook):
    """Overlap the GPU decoding of :class:`~cma_ood.datasets.DecodeOnDevice`
    batches with the model's work on the previous batch.

    Without it the data preprocessor decodes each batch when the model is
    called with it: nvJPEG's host-side share and the crops and resizes of
    batch ``k + 1`` then wait until the model's step ``k`` has been queued,
    and the GPU idles meanwhile. This hook wraps the running loop's
    dataloader in a :class:`DecodeAheadLoader` that calls the model's
    ``data_preprocessor.decode`` one batch ahead in a background thread on
    a side CUDA stream, so the preprocessor receives decoded images.

    It does nothing without CUDA, with a preprocessor that has no
    ``decode`` or whose ``decode_ahead`` is False
    (``model.data_preprocessor.decode_ahead=False``), and for batches
    without an ``encoded`` entry (the CPU pipeline): it is in the default
    runtime, and configs switch to GPU decoding with the pipeline alone.
    """
    priority = 'LOW'

    def _wrap(self, runner, loop):
        if loop is None or not torch.cuda.is_available():
            return
        loader = getattr(loop, 'dataloader', None)
        if loader is None or isinstance(loader, DecodeAheadLoader):
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        preprocessor = getattr(model, 'data_preprocessor', None)
        decode = getattr(preprocessor, 'decode', None)
        # the device decode works on (MMEngine's BaseDataPreprocessor
        # follows the model's .to() / .cuda())
        device = getattr(preprocessor, 'device', None)
        if (decode is None or not getattr(preprocessor, 'decode_ahead', False)
                or device is None or device.type != 'cuda'):
            return
        loop.dataloader = DecodeAheadLoader(
            loader, decode, needs=lambda batch: 'encoded' in batch,
            device=device)

    def before_train_epoch(self, runner):
        self._wrap(runner, runner.train_loop)

    def before_val_epoch(self, runner):
        self._wrap(runner, runner.val_loop)

    def before_test_epoch(self, runner):
        self._wrap(runner, runner.test_loop)
