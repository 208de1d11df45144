"""DecodeOnDevice, jpeg_header, plan_geometry and stacked_collate on the CPU.

The GPU decoder itself is measured on a GPU machine (docs/benchmarks.md);
here the same code path runs with libjpeg-turbo on the CPU
(``enabled=True``), which checks the plans, the routing of files to the
CPU pipeline, the collation and the preprocessor's reassembly."""
import os.path as osp

import mmcv
import numpy as np
import pytest
import torch
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from mmpretrain.registry import MODELS, TRANSFORMS
import PIL
from PIL import Image

from _helpers import REPO
from cma_ood.datasets import BrokenImageError, stacked_collate
from cma_ood.datasets.collate import pack_encoded
from cma_ood.datasets.transforms import (PLAN_FIELDS, jpeg_header,
                                         plan_geometry)

PIL_MAJOR = int(PIL.__version__.split('.')[0])
PIPELINES = Config.fromfile(
    osp.join(REPO, 'configs', '_base_', 'datasets', 'pipelines', 'clip.py'))


@pytest.fixture(autouse=True)
def scope():
    init_default_scope('mmpretrain')


def _photo(rng, h, w):
    """A JPEG-like test picture: smooth colour field plus noise."""
    coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC))
    noise = rng.integers(-15, 16, (h, w, 3))
    return Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8))


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """12 colour JPEGs of varied sizes (some progressive) and one of each
    kind that must take the CPU path."""
    root = tmp_path_factory.mktemp('jpegs')
    rng = np.random.default_rng(0)
    sizes = [(int(rng.integers(120, 400)), int(rng.integers(120, 400)))
             for _ in range(10)] + [(300, 400), (300, 400)]  # a same-size pair
    jpegs = []
    for i, (h, w) in enumerate(sizes):
        path = str(root / f'{i}.jpg')
        _photo(rng, h, w).save(path, quality=90, progressive=i % 3 == 0)
        jpegs.append(path)
    base = _photo(rng, 200, 260)
    odd = dict(png=root / 'a.png', grey=root / 'b.jpg', cmyk=root / 'c.jpg',
               rotated=root / 'd.jpg')
    base.save(odd['png'])
    base.convert('L').save(odd['grey'], quality=90)
    base.convert('CMYK').save(odd['cmyk'], quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    base.save(odd['rotated'], quality=90, exif=exif)
    return jpegs, {k: str(v) for k, v in odd.items()}


def test_jpeg_header_reads_size_components_and_flags(files):
    jpegs, odd = files
    for i, path in enumerate(jpegs):
        with open(path, 'rb') as f:
            header = jpeg_header(f.read())
        w, h = Image.open(path).size
        assert (header.height, header.width) == (h, w)
        assert header.components == 3 and header.precision == 8
        assert header.process == ('progressive' if i % 3 == 0 else
                                  'baseline')
        assert header.is_plain_ycbcr
    read = {k: open(v, 'rb').read() for k, v in odd.items()}
    assert jpeg_header(read['png']) is None
    assert jpeg_header(read['grey']).components == 1
    assert jpeg_header(read['cmyk']).components == 4
    assert jpeg_header(read['rotated']).orientation == 6
    for kind in ('grey', 'cmyk', 'rotated'):
        assert not jpeg_header(read[kind]).is_plain_ycbcr, kind
    assert jpeg_header(b'') is None
    assert jpeg_header(b'\xff\xd8\xff\xe0\x00') is None  # cut in a segment


def _run_plan_on_cpu(img, plan, backend='pillow'):
    """A plan executed with the CPU pipeline's own operations (mmcv)."""
    p = dict(zip(PLAN_FIELDS, plan.tolist()))
    img = img[p['y0']:p['y0'] + p['h0'], p['x0']:p['x0'] + p['w0']]
    if (p['out_h'], p['out_w']) != (p['h0'], p['w0']):
        interp = 'bicubic' if p['mode'] in (1, 3) else 'bilinear'
        img = mmcv.imresize(img, (p['out_w'], p['out_h']),
                            interpolation=interp, backend=backend)
    img = img[p['y1']:p['y1'] + p['h1'], p['x1']:p['x1'] + p['w1']]
    return img[:, ::-1] if p['flip'] else img


@pytest.mark.parametrize('name', [
    'test_pipeline', 'test_pipeline_bilinear', 'train_pipeline',
    'train_with_flip'
])
def test_plan_reproduces_the_cpu_pipeline_exactly(files, name):
    """Executed with the CPU's operations, a plan gives the CPU pipeline's
    image bit for bit, with the same random crops and flips."""
    pipeline = PIPELINES['train_pipeline' if name == 'train_with_flip' else
                         name]
    if name == 'train_with_flip':
        pipeline = [*pipeline[:-1], dict(type='RandomFlip', prob=0.5),
                    pipeline[-1]]
    cpu = Compose(pipeline[:-1])  # without PackInputs: HWC BGR
    geometry = [TRANSFORMS.build(t) for t in pipeline[1:-1]]
    flips = 0
    for i, path in enumerate(files[0]):
        np.random.seed(i)
        want = cpu(dict(img_path=path))['img']
        np.random.seed(i)
        h, w = Image.open(path).size[::-1]
        plan = plan_geometry(geometry, h, w)
        flips += int(plan[-1])
        got = _run_plan_on_cpu(mmcv.imread(path), plan)
        np.testing.assert_array_equal(got, want)
    if name == 'train_with_flip':
        assert 0 < flips < len(files[0])  # both outcomes drawn


def test_plan_refuses_what_it_cannot_run_on_the_gpu():
    with pytest.raises(ValueError, match='ColorJitter has no GPU'):
        TRANSFORMS.build(
            dict(type='DecodeOnDevice', pipeline=[
                dict(type='CheckedLoadImageFromFile'),
                dict(type='ColorJitter', brightness=0.4),
                dict(type='PackInputs')
            ]))
    with pytest.raises(ValueError, match='end with PackInputs'):
        TRANSFORMS.build(
            dict(type='DecodeOnDevice',
                 pipeline=[dict(type='CheckedLoadImageFromFile')]))
    with pytest.raises(ValueError, match='lanczos'):
        TRANSFORMS.build(
            dict(type='DecodeOnDevice', pipeline=[
                dict(type='CheckedLoadImageFromFile'),
                dict(type='ResizeEdge', scale=32, backend='pillow',
                     interpolation='lanczos'),
                dict(type='PackInputs')
            ]))


def _both(pipeline, paths, enabled=True, seed0=0):
    cpu = Compose(pipeline)
    dev = TRANSFORMS.build(
        dict(type='DecodeOnDevice', pipeline=pipeline, enabled=enabled))
    a, b = [], []
    for i, path in enumerate(paths):
        np.random.seed(seed0 + i)
        a.append(cpu(dict(img_path=path)))
        np.random.seed(seed0 + i)
        b.append(dev(dict(img_path=path)))
    return a, b


def test_disabled_is_the_cpu_pipeline(files):
    """enabled=False (and enabled=None without CUDA) changes nothing."""
    paths = files[0][:3] + list(files[1].values())
    for enabled in (False, None):
        if enabled is None and torch.cuda.is_available():
            continue
        a, b = _both(PIPELINES['test_pipeline'], paths, enabled)
        for x, y in zip(a, b):
            assert set(y) == {'inputs', 'data_samples'}
            assert torch.equal(x['inputs'], y['inputs'])


def test_files_the_gpu_cannot_decode_take_the_cpu_pipeline(files):
    jpegs, odd = files
    paths = [jpegs[0], *odd.values(), jpegs[1]]
    a, b = _both(PIPELINES['test_pipeline'], paths)
    assert ['encoded' in s for s in b] == [True, False, False, False, False,
                                           True]
    for x, y in zip(a[1:-1], b[1:-1]):  # the CPU pipeline's very images
        assert torch.equal(x['inputs'], y['inputs'])
    enc = b[0]
    assert enc['data_samples'].img_path == jpegs[0]
    assert enc['data_samples'].ori_shape == Image.open(jpegs[0]).size[::-1]
    assert enc['data_samples'].img_shape == (224, 224)
    assert np.array_equal(enc['encoded']['data'],
                          np.fromfile(jpegs[0], np.uint8))


def test_broken_files_raise_the_loaders_error(tmp_path, files):
    """A truncated JPEG is refused as by the CPU pipeline, naming it."""
    data = open(files[0][0], 'rb').read()
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(data[:len(data) // 2])
    dev = TRANSFORMS.build(
        dict(type='DecodeOnDevice', pipeline=PIPELINES['test_pipeline'],
             enabled=True))
    with pytest.raises(BrokenImageError, match='cut.jpg.*truncated JPEG'):
        dev(dict(img_path=str(cut)))
    with pytest.raises(BrokenImageError, match='missing.jpg.*cannot be read'):
        dev(dict(img_path=str(tmp_path / 'missing.jpg')))


def test_stacked_collate_packs_and_orders(files):
    jpegs, odd = files
    paths = [odd['png'], jpegs[0], jpegs[1], odd['grey'], jpegs[2]]
    _, b = _both(PIPELINES['test_pipeline'], paths)
    batch = stacked_collate(b)
    assert [s.img_path for s in batch['data_samples']] == paths
    assert batch['inputs'].shape == (2, 3, 224, 224)  # stacked, not a list
    assert torch.equal(batch['inputs'][1], b[3]['inputs'])
    enc = batch['encoded']
    assert enc['positions'].tolist() == [1, 2, 4]
    offsets = enc['offsets'].tolist()
    for k, i in enumerate((1, 2, 4)):
        got = enc['data'][offsets[k]:offsets[k + 1]].numpy()
        assert np.array_equal(got, b[i]['encoded']['data'])
        assert torch.equal(enc['plans'][k],
                           torch.from_numpy(b[i]['encoded']['plan']))
    # images of different sizes stay a list, as with pseudo_collate
    c = stacked_collate([dict(inputs=torch.zeros(3, 4, 4), data_samples=1),
                         dict(inputs=torch.zeros(3, 5, 4), data_samples=2)])
    assert isinstance(c['inputs'], list) and c['data_samples'] == [1, 2]
    # anything else is pseudo_collate's
    other = [dict(x=torch.ones(2)), dict(x=torch.zeros(2))]
    assert torch.equal(
        stacked_collate(other)['x'][0], pseudo_collate(other)['x'][0])
    packed = pack_encoded([
        dict(data=np.array([1, 2], np.uint8), plan=np.zeros(12, np.int64)),
        dict(data=np.array([3], np.uint8), plan=np.ones(12, np.int64))
    ])
    assert packed['data'].tolist() == [1, 2, 3]
    assert packed['offsets'].tolist() == [0, 2, 3]


PRE = dict(type='CLIPDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1],
           to_rgb=True)
# The bound of the per-image torch resize (run_plans, used for OpenCV's
# modes and checked against Pillow below), in grey levels (0-255); the
# batched path (run_plans_batched, Pillow's modes) is exact.
MEAN_BOUND, MAX_BOUND = 0.3, 2


@pytest.mark.parametrize('name', ['test_pipeline', 'test_pipeline_bilinear',
                                  'train_pipeline'])
def test_preprocessed_batch_matches_the_cpu_pipeline(files, name):
    """The decoded, transformed batch in the CPU pipeline's channel order
    and sample order, within the stated bound of the CPU pipeline's."""
    jpegs, odd = files
    paths = [*jpegs, odd['png'], odd['cmyk']]
    a, b = _both(PIPELINES[name], paths)
    pre = MODELS.build(PRE)
    want = pre(pseudo_collate(a))['inputs']
    got = pre(stacked_collate(b))['inputs']
    assert got.shape == want.shape == (len(paths), 3, 224, 224)
    diff = (got - want).abs()
    assert diff.mean() < MEAN_BOUND and diff.max() <= MAX_BOUND
    # Pillow's weights, its order of passes and its rounding: bit-identical
    # with libjpeg-turbo decoding on both sides
    assert torch.equal(got, want)
    assert torch.equal(got[-2:], want[-2:])  # the CPU-decoded ones
    # the wrong channel order would be far off (guards the BGR flip)
    assert (got.flip(1) - want).abs().mean() > 30 * MEAN_BOUND


def test_decode_failures_fall_back_and_name_the_file(files, monkeypatch):
    """A batch the decoder refuses is decoded file by file; a file it
    refuses is decoded by mmcv (OpenCV); one that nothing decodes raises
    BrokenImageError naming it."""
    from cma_ood.models.utils import device_decode
    jpegs = files[0][:3]
    _, b = _both(PIPELINES['test_pipeline'], jpegs)
    batch = stacked_collate(b)
    reference = device_decode.decode_batch(batch['encoded'], 'cpu')
    real = device_decode._decode_jpeg
    enc = batch['encoded']
    second = enc['data'][enc['offsets'][1]:enc['offsets'][2]]
    calls = []

    def picky(buffers, device):  # refuses batches and the second file
        calls.append(len(buffers))
        if len(buffers) > 1 or torch.equal(buffers[0], second):
            raise RuntimeError('nvjpeg: unsupported')
        return real(buffers, device)

    monkeypatch.setattr(device_decode, '_decode_jpeg', picky)
    got = device_decode.decode_batch(enc, 'cpu', names=jpegs)
    assert calls == [3, 1, 1, 1]
    assert torch.equal(got[[0, 2]], reference[[0, 2]])
    assert (got[1].float() - reference[1].float()).abs().max() <= 2  # OpenCV

    broken = dict(batch['encoded'], data=torch.zeros_like(
        batch['encoded']['data']))
    monkeypatch.setattr(device_decode, '_decode_jpeg',
                        lambda buffers, device: (_ for _ in ()).throw(
                            RuntimeError('bad')))
    with pytest.raises(BrokenImageError, match=osp.basename(jpegs[0])):
        device_decode.decode_batch(broken, 'cpu', names=jpegs)


def test_resize_uint8_matches_pillow():
    """resize_uint8 against Pillow on random images, both directions."""
    from cma_ood.models.utils.device_decode import resize_uint8
    rng = np.random.default_rng(1)
    for (h, w), (oh, ow) in [((97, 131), (40, 64)), ((30, 20), (64, 50)),
                             ((50, 80), (50, 33))]:
        img = rng.integers(0, 256, (h, w, 3), np.uint8)
        for mode, filt in ((0, Image.BILINEAR), (1, Image.BICUBIC)):
            want = np.asarray(Image.fromarray(img).resize((ow, oh), filt))
            got = resize_uint8(
                torch.from_numpy(img).permute(2, 0, 1)[None], (oh, ow),
                mode)[0].permute(1, 2, 0).numpy()
            diff = np.abs(got.astype(int) - want)
            assert diff.max() <= MAX_BOUND and diff.mean() < MEAN_BOUND, (
                h, w, mode)


def test_subsampled_chroma_can_stay_on_the_cpu(tmp_path):
    """jpeg_header tells 4:2:0 from 4:4:4 files; subsampled='cpu' decodes
    only the 4:4:4 ones on the device (nvJPEG and libjpeg-turbo differ on
    subsampled chroma only: docs/fidelity.md)."""
    rng = np.random.default_rng(3)
    img = _photo(rng, 64, 80)
    paths = dict(s420=str(tmp_path / 'a.jpg'), s444=str(tmp_path / 'b.jpg'),
                 s422=str(tmp_path / 'c.jpg'))
    img.save(paths['s420'], quality=90, subsampling=2)
    img.save(paths['s444'], quality=90, subsampling=0)
    img.save(paths['s422'], quality=90, subsampling=1)
    subsampled = {k: jpeg_header(open(v, 'rb').read()).chroma_subsampled
                  for k, v in paths.items()}
    assert subsampled == dict(s420=True, s444=False, s422=True)
    pipeline = PIPELINES['test_pipeline']
    for where, want in (('device', [True, True, True]),
                        ('cpu', [False, True, False])):
        dev = TRANSFORMS.build(
            dict(type='DecodeOnDevice', pipeline=pipeline, enabled=True,
                 subsampled=where))
        got = ['encoded' in dev(dict(img_path=paths[k]))
               for k in ('s420', 's444', 's422')]
        assert got == want, where
    with pytest.raises(ValueError, match="subsampled must be 'device'"):
        TRANSFORMS.build(dict(type='DecodeOnDevice', pipeline=pipeline,
                              subsampled='gpu'))


def test_the_readme_switch_wraps_the_configs_pipeline(tmp_path):
    """README "Speed": one line switches a test config to the GPU
    pipeline, which wraps that config's own CPU pipeline."""
    base = osp.join(REPO, 'configs', 'cma',
                    'cma-neglabel_clip-vit-b16_4xb128_in1k-mos.py')
    cfg_file = tmp_path / 'gpu.py'
    cfg_file.write_text(
        f'_base_ = [{base!r}]\n'
        'test_dataloader = dict(dataset=dict('
        'pipeline={{_base_.device_test_pipeline}}))\n')
    cpu = Config.fromfile(base).test_dataloader
    gpu = Config.fromfile(str(cfg_file)).test_dataloader
    assert gpu.dataset.pipeline == [
        dict(type='DecodeOnDevice', pipeline=cpu.dataset.pipeline)]
    assert gpu.collate_fn == dict(type='stacked_collate')
    assert TRANSFORMS.build(gpu.dataset.pipeline[0]).enabled == \
        torch.cuda.is_available()


def test_pseudo_collated_gpu_batches_are_refused(files):
    """A DecodeOnDevice batch collated by MMEngine's pseudo_collate (the
    default when a config does not set stacked_collate) is an error saying
    what to set."""
    _, b = _both(PIPELINES['test_pipeline'], files[0][:2])
    pre = MODELS.build(PRE)
    with pytest.raises(ValueError, match="collate_fn=dict.*stacked_collate"):
        pre(pseudo_collate(b))


def test_batched_plans_are_pillows_resize():
    """run_plans_batched (Pillow's weights as matrix products) against
    Pillow on random images, sizes and plans: crops, up- and downscaling,
    a centre crop of the resized image and flips; modes OpenCV resizes
    with go through run_plans."""
    from cma_ood.models.utils.device_decode import (
        pillow_resizes_height_first, run_plans, run_plans_batched)
    rng = np.random.default_rng(4)
    for mode, filt in ((0, Image.BILINEAR), (1, Image.BICUBIC)):
        images, plans, want = [], [], []
        for _ in range(16):
            h, w = (int(v) for v in rng.integers(20, 90, 2))
            img = rng.integers(0, 256, (h, w, 3), np.uint8)
            h0, w0 = int(rng.integers(10, h + 1)), int(rng.integers(10, w + 1))
            y0, x0 = int(rng.integers(0, h - h0 + 1)), int(
                rng.integers(0, w - w0 + 1))
            # independent factors: both of Pillow's orders of passes
            out_h = max(int(h0 * rng.uniform(0.3, 2.0)), 16)
            out_w = max(int(w0 * rng.uniform(0.3, 2.0)), 16)
            y1, x1 = int(rng.integers(0, out_h - 16 + 1)), int(
                rng.integers(0, out_w - 16 + 1))
            flip = int(rng.integers(0, 2))
            crop = Image.fromarray(img[y0:y0 + h0, x0:x0 + w0])
            ref = np.asarray(crop.resize((out_w, out_h), filt))
            ref = ref[y1:y1 + 16, x1:x1 + 16]
            want.append(ref[:, ::-1] if flip else ref)
            images.append(torch.from_numpy(img).permute(2, 0, 1))
            plans.append([y0, x0, h0, w0, out_h, out_w, mode, y1, x1, 16, 16,
                          flip])
        got = run_plans_batched(images, torch.tensor(plans))
        want = torch.from_numpy(np.stack(want)).permute(0, 3, 1, 2)
        assert torch.equal(got, want), mode
        orders = {pillow_resizes_height_first(*p[2:6]) for p in plans}
        if PIL_MAJOR >= 13:
            assert orders == {False, True}  # both orders were exercised
    # padded in groups of similar size (here at most 3 x 90 x 90 values
    # each, so several groups): the same result
    assert torch.equal(
        run_plans_batched(images, torch.tensor(plans),
                          max_elements=3 * 90 * 90), got)
    # OpenCV's modes take the per-image path
    plans[0][6] = 3
    assert torch.equal(
        run_plans_batched(images, torch.tensor(plans)),
        run_plans(images, torch.tensor(plans)))


def test_pillows_order_of_passes_is_predicted():
    """pillow_resizes_height_first names the order in which the installed
    Pillow resizes (each pass rounded to uint8, so the order shows in the
    result), on random sizes where the two orders give different images."""
    from cma_ood.models.utils.device_decode import \
        pillow_resizes_height_first

    def two_passes(img, size, height_first):
        (h, w), (oh, ow) = img.shape[:2], size
        step = (w, oh) if height_first else (ow, h)
        mid = Image.fromarray(img).resize(step, Image.BICUBIC)
        return np.asarray(mid.resize((ow, oh), Image.BICUBIC))

    rng = np.random.default_rng(11)
    seen = set()
    for _ in range(300):
        h, w, oh, ow = (int(v) for v in rng.integers(12, 120, 4))
        if oh == h or ow == w:
            continue
        img = rng.integers(0, 256, (h, w, 3), np.uint8)
        want = np.asarray(Image.fromarray(img).resize((ow, oh),
                                                      Image.BICUBIC))
        by_order = {first: np.array_equal(two_passes(img, (oh, ow), first),
                                          want) for first in (False, True)}
        if by_order[False] == by_order[True]:
            continue  # the order does not show
        predicted = pillow_resizes_height_first(h, w, oh, ow)
        assert by_order[predicted], (h, w, oh, ow)
        seen.add(predicted)
    assert seen == ({False, True} if PIL_MAJOR >= 13 else {False})


def test_cpu_share_decodes_that_share_on_the_cpu(files):
    """cpu_share: the files whose index i has frac((i + 1) * golden ratio)
    below the share take the CPU pipeline, the same ones whatever the
    order they come in; the rest stay encoded."""
    golden = (5 ** 0.5 - 1) / 2
    dev = TRANSFORMS.build(
        dict(type='DecodeOnDevice', pipeline=PIPELINES['test_pipeline'],
             enabled=True, cpu_share=0.4))
    n = 1000
    on_cpu = [dev.on_cpu(i) for i in range(n)]
    assert on_cpu == [((i + 1) * golden) % 1 < 0.4 for i in range(n)]
    # evenly spread: every run of 10 consecutive indices has 3-5 of them
    assert all(3 <= sum(on_cpu[s:s + 10]) <= 5 for s in range(n - 10))
    jpegs = files[0]
    order = [7, 2, 0, 5, 1, 3]
    out = {i: dev(dict(img_path=jpegs[i], sample_idx=i)) for i in order}
    for i, sample in out.items():
        assert ('inputs' in sample) == on_cpu[i]
        assert ('encoded' in sample) != on_cpu[i]
    cpu = Compose(PIPELINES['test_pipeline'])
    for i in order:
        if on_cpu[i]:  # the CPU pipeline's very image
            assert torch.equal(out[i]['inputs'],
                               cpu(dict(img_path=jpegs[i]))['inputs'])
    # without an index: its own count, 0, 1, 2, ...
    counted = TRANSFORMS.build(
        dict(type='DecodeOnDevice', pipeline=PIPELINES['test_pipeline'],
             enabled=True, cpu_share=0.4))
    got = ['inputs' in counted(dict(img_path=jpegs[0])) for _ in range(6)]
    assert got == on_cpu[:6]
    # 0 and 1: none and all
    for share, want in ((0.0, False), (1.0, True)):
        t = TRANSFORMS.build(dict(type='DecodeOnDevice', enabled=True,
                                  pipeline=PIPELINES['test_pipeline'],
                                  cpu_share=share))
        assert all(t.on_cpu(i) is want for i in range(50))
    with pytest.raises(ValueError, match=r'cpu_share must be in \[0, 1\], '
                       'got 1.5'):
        TRANSFORMS.build(dict(type='DecodeOnDevice', cpu_share=1.5,
                              pipeline=PIPELINES['test_pipeline']))
