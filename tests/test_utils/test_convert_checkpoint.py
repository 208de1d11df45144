"""tools/convert_cma_checkpoint.py: the CMA release layout and OpenAI's
TorchScript archives become checkpoints that load_from / tools/test.py load
with identical predictions."""
import os.path as osp
import pickle

import clip
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner.checkpoint import load_checkpoint
from mmpretrain.registry import DATASETS, MODELS
from mmpretrain.structures import DataSample

import cma_ood  # noqa: F401
from cma_ood.datasets.shapes import ID_SHAPES
from cma_ood.utils import safe_torch_load
from cma_ood.utils.convert import convert_checkpoint, infer_arch

from _helpers import DEMO_CONFIG, run_tool


# tracing the tiny CLIP for the TorchScript archive is noisy
pytestmark = [
    pytest.mark.usefixtures('single_thread'),
    pytest.mark.filterwarnings('ignore::torch.jit.TracerWarning',
                               'ignore::FutureWarning'),
]


def demo_model(seed: int):
    """The demo config's classifier (tiny-rn-32px) with the shapes' class
    names, as ClassNamesHook would set them."""
    torch.manual_seed(seed)
    model = MODELS.build(Config.fromfile(DEMO_CONFIG).model)
    model.set_classnames(ID_SHAPES)
    return model


def adamw_step(model):
    """One real AdamW step: moves the weights off their initialisation and
    gives the optimizer state the release's checkpoints hold."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    torch.manual_seed(0)
    samples = [DataSample().set_gt_label(i) for i in range(4)]
    model.train()
    model.loss(torch.randn(4, 3, 32, 32), samples)['loss'].backward()
    opt.step()
    model.eval()
    return opt


def save_release_layout(model, opt, path, epoch=4):
    """``{'epoch', 'model_state_dict', 'optimizer_state_dict'}`` with the
    ``module.`` prefix of DataParallel around openai-clip's CLIP."""
    torch.save(
        dict(
            epoch=epoch,
            model_state_dict={
                f'module.{k}': v
                for k, v in model.clip.state_dict().items()
            },
            optimizer_state_dict=opt.state_dict()), path)


def predictions(model, dataset, batch_size=16):
    out = []
    for start in range(0, len(dataset), batch_size):
        batch = pseudo_collate(
            [dataset[i] for i in range(start,
                                       min(start + batch_size, len(dataset)))])
        out += model.test_step(batch)
    return out


def assert_same_predictions(a, b, atol=0.0):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x = x if isinstance(x, dict) else x.to_dict()
        y = y if isinstance(y, dict) else y.to_dict()
        assert torch.equal(x['pred_label'], y['pred_label'])
        torch.testing.assert_close(x['pred_score'], y['pred_score'],
                                   rtol=0, atol=atol)
        assert x['ood_scores'].keys() == y['ood_scores'].keys()
        for name in x['ood_scores']:
            torch.testing.assert_close(x['ood_scores'][name],
                                       y['ood_scores'][name], rtol=0,
                                       atol=atol)


def small_test_set(num=4):
    cfg = Config.fromfile(DEMO_CONFIG).test_dataloader.dataset
    cfg.id_dataset.num_per_class = num
    for ood in cfg.ood_datasets.values():
        ood.num_per_class = num
    return DATASETS.build(cfg)


def test_release_layout_converts_to_identical_predictions(tmp_path):
    model = demo_model(seed=1)
    opt = adamw_step(model)
    src, dst = tmp_path / 'cma_release.pth', tmp_path / 'converted.pth'
    save_release_layout(model, opt, src)
    # the release layout itself loads with weights_only=True
    release = torch.load(src, weights_only=True)
    assert release['optimizer_state_dict']['state']

    run_tool('tools/convert_cma_checkpoint.py', str(src), str(dst))
    converted = safe_torch_load(str(dst))
    assert converted['meta'] == dict(
        source_format='cma', epoch=4, arch='tiny-rn-32px',
        converted_from='cma_release.pth')
    assert set(converted['state_dict']) == {
        f'clip.{k}' for k in model.clip.state_dict()}

    fresh = demo_model(seed=2).eval()
    load_checkpoint(fresh, str(dst), strict=True)
    dataset = small_test_set()
    expected = predictions(model, dataset)
    assert_same_predictions(predictions(fresh, dataset), expected)

    # tools/test.py with the demo config loads it: the same predictions
    out = tmp_path / 'preds.pkl'
    n = 4
    run_tool(
        'tools/test.py', DEMO_CONFIG, str(dst), '--work-dir',
        str(tmp_path / 'test'), '--out', str(out), '--cfg-options',
        'test_dataloader.batch_size=16', 'test_dataloader.num_workers=0',
        f'test_dataloader.dataset.id_dataset.num_per_class={n}',
        *(f'test_dataloader.dataset.ood_datasets.{s}.num_per_class={n}'
          for s in ('unseen_shapes', 'textures', 'noise')))
    with open(out, 'rb') as f:
        dumped = pickle.load(f)
    dumped.sort(key=lambda d: d['ood_index'])
    # another process (thread count) may round the last bit differently
    assert_same_predictions(dumped, expected, atol=1e-5)


def test_openai_torchscript_archive_converts(tmp_path):
    torch.manual_seed(3)
    model = MODELS.build(
        dict(type='MultiModalClassifier', arch='tiny-vit-32px',
             classnames=['cat', 'dog', 'car'],
             ood_scorers=[dict(type='MCMScorer'), dict(type='MSPScorer')]))
    model.eval()
    traced = torch.jit.trace(
        model.clip, (torch.randn(1, 3, 32, 32),
                     clip.tokenize(['a dog'], context_length=24)),
        check_trace=False)
    src, dst = tmp_path / 'tiny-openai.pt', tmp_path / 'converted.pth'
    torch.jit.save(traced, str(src))

    meta = convert_checkpoint(str(src), str(dst))
    assert meta == dict(source_format='openai-torchscript',
                        arch='tiny-vit-32px', converted_from='tiny-openai.pt')

    torch.manual_seed(4)
    fresh = MODELS.build(
        dict(type='MultiModalClassifier', arch='tiny-vit-32px',
             classnames=['cat', 'dog', 'car'],
             ood_scorers=[dict(type='MCMScorer'), dict(type='MSPScorer')]))
    load_checkpoint(fresh, str(dst), strict=True)
    fresh.eval()
    images = torch.randn(5, 3, 32, 32)
    a, b = model.predict(images), fresh.predict(images)
    assert_same_predictions(a, b)


def test_arch_is_checked_and_inferred(tmp_path):
    model = demo_model(seed=5)
    state = {k: v for k, v in model.clip.state_dict().items()}
    assert infer_arch(state) == 'tiny-rn-32px'
    src = tmp_path / 'plain.pth'
    torch.save(state, src)
    with pytest.raises(ValueError) as err:
        convert_checkpoint(str(src), str(tmp_path / 'x.pth'),
                           arch='tiny-vit-32px')
    msg = str(err.value)
    assert 'plain.pth does not hold CLIP tiny-vit-32px weights' in msg
    assert 'missing key(s)' in msg and '\n' not in msg
    # a truncated state dict fits no architecture: the error names the
    # closest one and the keys that are missing
    del state['visual.attnpool.c_proj.bias']
    torch.save(state, src)
    with pytest.raises(ValueError, match=r'fits no known CLIP architecture; '
                       r'against the closest, tiny-rn-32px: 1 missing '
                       r"key\(s\): \['visual.attnpool.c_proj.bias'\]"):
        convert_checkpoint(str(src), str(tmp_path / 'x.pth'))
    assert not osp.exists(tmp_path / 'x.pth')
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        convert_checkpoint(str(tmp_path / 'nope.pth'), str(tmp_path / 'y'))


class _Payload:
    def __reduce__(self):
        return (print, ('pwned', ))


def test_converter_refuses_untrusted_pickles(tmp_path):
    src = tmp_path / 'evil.pth'
    torch.save({'model_state_dict': {}, 'x': _Payload()}, src)
    with pytest.raises(pickle.UnpicklingError, match='--trust-checkpoint'):
        convert_checkpoint(str(src), str(tmp_path / 'out.pth'))
    assert not osp.exists(tmp_path / 'out.pth')
