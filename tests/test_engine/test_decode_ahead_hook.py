"""DecodeAheadLoader / DecodeAheadHook: decoding one batch ahead in a
thread, in order, errors where their batch is, and the real preprocessor's
decode giving the same batch as decoding inside the preprocessor."""
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS, TRANSFORMS
from PIL import Image

from cma_ood.datasets import stacked_collate
from cma_ood.engine.hooks import DecodeAheadHook, DecodeAheadLoader


class Loader(list):
    """A list with the attributes loops and hooks read off a dataloader."""
    batch_size = 2
    sampler = 'the sampler'


def encoded(i):
    return dict(encoded=i, data_samples=[i])


def decoded(batch):
    return dict(inputs=torch.full((1, ), batch['encoded']),
                data_samples=batch['data_samples'])


def test_batches_arrive_in_order_decoded_or_passed_through():
    batches = Loader([encoded(0), dict(inputs='cpu batch'), encoded(2)])
    loader = DecodeAheadLoader(batches, decoded,
                               lambda b: 'encoded' in b, 'cpu')
    got = list(loader)
    assert [b['inputs'].item() for b in (got[0], got[2])] == [0, 2]
    assert got[1] == dict(inputs='cpu batch')  # not decoded
    assert 'encoded' not in got[0]
    assert len(loader) == 3 and loader.sampler == 'the sampler'
    assert loader.batch_size == 2
    assert list(loader) == got  # iterable again (each epoch)


def test_the_next_batch_is_decoded_while_the_loop_holds_this_one():
    """When the loop receives batch k, the decoding of batch k + 1 has
    already started in another thread."""
    started = {i: threading.Event() for i in range(4)}
    threads = set()

    def decode(batch):
        threads.add(threading.get_ident())
        started[batch['encoded']].set()
        return decoded(batch)

    loader = DecodeAheadLoader(Loader(map(encoded, range(4))), decode,
                               lambda b: True, 'cpu')
    for k, batch in enumerate(loader):
        assert batch['inputs'].item() == k
        if k < 3:
            assert started[k + 1].wait(timeout=10), f'batch {k + 1} waited'
    assert threads and threading.get_ident() not in threads


def test_a_decode_error_is_raised_where_its_batch_would_be():
    def decode(batch):
        if batch['encoded'] == 2:
            raise ValueError('Broken image file c.jpg')
        return decoded(batch)

    loader = DecodeAheadLoader(Loader(map(encoded, range(4))), decode,
                               lambda b: True, 'cpu')
    got = []
    with pytest.raises(ValueError, match='c.jpg'):
        for batch in loader:
            got.append(batch['inputs'].item())
    assert got == [0, 1]


def test_preprocessor_decode_ahead_equals_decoding_in_the_preprocessor(
        tmp_path):
    init_default_scope('mmpretrain')
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        path = str(tmp_path / f'{i}.jpg')
        Image.fromarray(
            rng.integers(0, 256, (40 + 9 * i, 50 + 7 * i, 3),
                         np.uint8)).save(path, quality=90)
        paths.append(path)
    Image.fromarray(rng.integers(0, 256, (48, 48, 3), np.uint8)).save(
        tmp_path / 'cpu.png')  # takes the CPU pipeline inside the batch
    paths.append(str(tmp_path / 'cpu.png'))
    pipeline = TRANSFORMS.build(
        dict(type='DecodeOnDevice', enabled=True, pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='ResizeEdge', scale=32, edge='short',
                 backend='pillow', interpolation='bicubic'),
            dict(type='CenterCrop', crop_size=32),
            dict(type='PackInputs')
        ]))
    batches = [stacked_collate([pipeline(dict(img_path=p)) for p in chunk])
               for chunk in (paths[:4], paths[4:])]
    pre = MODELS.build(dict(type='CLIPDataPreprocessor', to_rgb=True,
                            mean=[122.8, 116.7, 104.1],
                            std=[68.5, 66.6, 70.3]))
    ahead = DecodeAheadLoader(Loader(batches), pre.decode,
                              lambda b: 'encoded' in b, 'cpu')
    for want, got in zip(batches, ahead):
        assert 'encoded' in want and 'encoded' not in got
        torch.testing.assert_close(pre(got)['inputs'], pre(want)['inputs'],
                                   rtol=0, atol=0)


def _runner(device):
    model = SimpleNamespace(data_preprocessor=SimpleNamespace(
        decode=lambda b: b, decode_ahead=True, device=torch.device(device)))
    loop = SimpleNamespace(dataloader=Loader([encoded(0)]))
    return SimpleNamespace(model=model, test_loop=loop, train_loop=loop,
                           val_loop=loop)


def test_hook_wraps_gpu_models_only(monkeypatch):
    runner = _runner('cpu')
    DecodeAheadHook().before_test_epoch(runner)  # no CUDA: unchanged
    assert isinstance(runner.test_loop.dataloader, Loader)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    DecodeAheadHook().before_test_epoch(runner)  # CPU model: unchanged
    assert isinstance(runner.test_loop.dataloader, Loader)
    runner.model.data_preprocessor.device = torch.device('cuda', 0)
    runner.model.data_preprocessor.decode_ahead = False  # switched off
    DecodeAheadHook().before_train_epoch(runner)
    assert isinstance(runner.train_loop.dataloader, Loader)
    runner.model.data_preprocessor.decode_ahead = True
    hook = DecodeAheadHook()
    hook.before_train_epoch(runner)
    wrapped = runner.train_loop.dataloader
    assert isinstance(wrapped, DecodeAheadLoader)
    assert wrapped._decode is runner.model.data_preprocessor.decode
    hook.before_train_epoch(runner)  # once only
    assert runner.train_loop.dataloader is wrapped
    assert isinstance(wrapped.loader, Loader)
