"""The optimised training path keeps the numerics of the published step.

Plain path: openai-clip's 77-token text forward for every sample, fp32,
the CMA formula over the full batch. Optimised path: our classifier's loss
(each class prompt encoded once, text tower cut to the batch's last EOT
with causal SDPA), under bf16 autocast as BF16OptimWrapper runs it, and
torch.compile'd."""
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.structures import DataSample

import cma_ood  # noqa: F401
from cma_ood.engine import AutoAmpOptimWrapper, BF16OptimWrapper
from cma_ood.models import MultiModalClassifier
from cma_ood.models.multimodal.clip_builder import tokenize

CLASSES = ['circle', 'square', 'triangle', 'star', 'a much longer name']


pytestmark = pytest.mark.usefixtures('single_thread')


def plain_loss(model, images, labels, lam):
    clip_model = model.clip
    tokens = tokenize([f'a photo of a {CLASSES[y]}' for y in labels], 24)
    img = F.normalize(clip_model.encode_image(images), dim=-1)
    txt = F.normalize(clip_model.encode_text(tokens), dim=-1)
    logits = clip_model.logit_scale.exp() * img @ txt.T
    targets = torch.arange(len(labels))
    return (F.cross_entropy(logits, targets) -
            lam * torch.logsumexp(logits, 1).mean() +
            F.cross_entropy(logits.T, targets) -
            lam * torch.logsumexp(logits.T, 1).mean()) / 2


def setup(**kwargs):
    torch.manual_seed(0)
    model = MultiModalClassifier(arch='tiny-vit-32px', classnames=CLASSES,
                                 loss=dict(type='CMALoss', lam=0.5), **kwargs)
    labels = [0, 1, 1, 4, 2, 3, 4, 0]
    images = torch.randn(len(labels), 3, 32, 32)
    samples = [DataSample().set_gt_label(y) for y in labels]
    return model, images, labels, samples


def test_bf16_fast_path_loss_matches_plain_fp32_step():
    model, images, labels, samples = setup()
    expected = plain_loss(model, images, labels, 0.5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fast = model.loss(images, samples)['loss']
    assert fast.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: agreement to ~1%
    torch.testing.assert_close(fast, expected, rtol=2e-2, atol=2e-2)
    # and in fp32 the fast path is the same computation
    torch.testing.assert_close(model.loss(images, samples)['loss'], expected,
                               rtol=1e-5, atol=1e-5)


def test_compiled_path_loss_matches_eager():
    model, images, labels, samples = setup(compile=True)
    eager, *_ = setup()
    expected = plain_loss(eager, images, labels, 0.5)
    torch.testing.assert_close(model.loss(images, samples)['loss'], expected,
                               rtol=1e-4, atol=1e-4)


def test_auto_amp_wrapper_falls_back_to_fp32_without_gpu():
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    wrapper = AutoAmpOptimWrapper(optimizer=optimizer)
    if torch.cuda.is_available():
        assert isinstance(wrapper, BF16OptimWrapper) or \
            type(wrapper).__name__ == 'AmpOptimWrapper'
    else:
        assert type(wrapper).__name__ == 'OptimWrapper'


@pytest.mark.parametrize('bf16', [True, False])
def test_auto_amp_picks_bf16_or_fp16_with_loss_scaling(monkeypatch, bf16):
    """On a GPU: bf16 autocast without a scaler where supported, else fp16
    with dynamic loss scaling (MMEngine's AmpOptimWrapper)."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module
    from mmengine.optim import AmpOptimWrapper
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda: bf16)
    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    optimizer = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    wrapper = AutoAmpOptimWrapper(optimizer=optimizer)
    if bf16:
        assert isinstance(wrapper, BF16OptimWrapper)
        assert not hasattr(wrapper, 'loss_scaler')
    else:
        assert isinstance(wrapper, AmpOptimWrapper)
        assert wrapper.cast_dtype == torch.float16
        assert wrapper.loss_scaler is not None


def test_amp_flag_rewrites_the_optim_wrapper_config():
    from cma_ood.engine import amp_optim_wrapper_cfg
    cfg = dict(type='AmpOptimWrapper', dtype='float16', loss_scale=512.0,
               optimizer=dict(type='AdamW', lr=1e-5), clip_grad=None)
    assert amp_optim_wrapper_cfg(cfg) == dict(
        type='AutoAmpOptimWrapper', optimizer=dict(type='AdamW', lr=1e-5),
        clip_grad=None)
