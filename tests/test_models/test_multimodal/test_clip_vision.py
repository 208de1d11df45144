"""The batch-first, class-token-only ViT forward equals CLIP's own.

openai-clip's LayerNorm computes in float32 whatever the input, so the
comparison is in float32: the two forwards differ only by the order of
floating-point operations (SDPA vs ``nn.MultiheadAttention``, the last
block computed for the class token only)."""
import pytest
import torch

from cma_ood.models import MultiModalClassifier, build_clip
from cma_ood.models.multimodal.clip_attention import self_attention
from cma_ood.models.multimodal.clip_vision import encode_image_vit, is_clip_vit, patch_embed

pytestmark = pytest.mark.usefixtures('single_thread')


def perturbed_clip(arch, seed=0):
    torch.manual_seed(seed)
    model = build_clip(arch)
    with torch.no_grad():
        # random init of CLIP leaves some biases at 0: perturb everything
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.mark.parametrize('arch', ['tiny-vit-32px', 'ViT-B/16'])
def test_fast_vit_forward_equals_clip_forward(arch):
    model = perturbed_clip(arch)
    res = model.visual.input_resolution
    images = torch.randn(3, 3, res, res)
    with torch.no_grad():
        expected = model.visual(images)
        fast = encode_image_vit(model.visual, images)
    assert fast.shape == expected.shape == (3, model.visual.output_dim)
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5)


def test_fast_vit_gradients_equal_clip_gradients():
    model = perturbed_clip('tiny-vit-32px', seed=1)
    images = torch.randn(4, 3, 32, 32)
    weights = torch.randn(4, model.visual.output_dim)
    grads = []
    for fn in (model.visual, lambda x: encode_image_vit(model.visual, x)):
        model.zero_grad()
        (fn(images) * weights).sum().backward()
        grads.append({n: p.grad.clone()
                      for n, p in model.visual.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4,
                                   atol=1e-6, msg=name)


def test_self_attention_queries_subset_equals_full_rows():
    torch.manual_seed(2)
    attn = torch.nn.MultiheadAttention(16, 4)
    x = torch.randn(2, 7, 16)
    full = self_attention(attn, x)
    ref = attn(*(x.transpose(0, 1), ) * 3, need_weights=False)[0]
    torch.testing.assert_close(full, ref.transpose(0, 1))
    torch.testing.assert_close(self_attention(attn, x, num_queries=3),
                               full[:, :3])
    with pytest.raises(ValueError, match='causal'):
        self_attention(attn, x, is_causal=True, num_queries=1)


def test_classifier_uses_fast_tower_for_vit_only():
    kwargs = dict(classnames=['a', 'b'])
    vit = MultiModalClassifier(arch='tiny-vit-32px', **kwargs)
    assert vit.fast_image_tower
    assert not MultiModalClassifier(arch='tiny-vit-32px',
                                    fast_image_tower=False,
                                    **kwargs).fast_image_tower
    rn = MultiModalClassifier(arch='tiny-rn-32px', **kwargs)
    assert not rn.fast_image_tower and is_clip_vit(vit.clip.visual)
    assert not is_clip_vit(rn.clip.visual)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(vit.encode_image(images),
                                   vit.clip.visual(images), rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize('size', [(32, 32), (35, 41)])
@pytest.mark.parametrize('bias', [False, True])
def test_patch_embed_equals_strided_convolution(size, bias):
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(3, 10, kernel_size=8, stride=8, bias=bias)
    images = torch.randn(2, 3, *size)
    expected = conv(images).flatten(2).transpose(1, 2)
    out = patch_embed(conv, images)
    assert out.shape == expected.shape == (2, (size[0] // 8) *
                                           (size[1] // 8), 10)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_patch_embed_runs_other_convolutions_as_they_are():
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(3, 6, kernel_size=3, stride=2, padding=1)
    images = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(patch_embed(conv, images),
                               conv(images).flatten(2).transpose(1, 2))
