"""GL-MCM's local features (clip_vision.vit_local_features and the
LastBlockTap): the value-path formula against a re-implementation from the
block's weights, the fast tower against CLIP's own forward."""
import pytest
import torch
import torch.nn.functional as F

from cma_ood.models.multimodal.clip_builder import build_clip
from cma_ood.models.multimodal.clip_vision import (
    LastBlockTap, encode_image_local_vit, encode_image_vit, last_block_tap,
    vit_class_token_embedding, vit_local_features)

pytestmark = pytest.mark.usefixtures('single_thread')


@pytest.fixture(scope='module')
def vit():
    torch.manual_seed(0)
    model = build_clip('tiny-vit-32px', None).eval()
    # non-trivial LayerNorm affine parameters and biases
    with torch.no_grad():
        for p in model.visual.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.visual


def layer_norm(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def brute_force_local(visual, tokens):
    """GL-MCM's clip/model.py restated token by token from the weights:
    v = out_proj(W_v LN1(x) + b_v) + x; v += c_proj(QuickGELU(c_fc(LN2 v)));
    ln_post, drop the class token, @ proj, L2-normalise."""
    blk = visual.transformer.resblocks[-1]
    d = tokens.shape[-1]
    w_v = blk.attn.in_proj_weight[2 * d:]
    b_v = blk.attn.in_proj_bias[2 * d:]
    out = torch.empty(tokens.shape[0], tokens.shape[1] - 1,
                      visual.proj.shape[1])
    for b in range(tokens.shape[0]):
        for t in range(1, tokens.shape[1]):
            x = tokens[b, t]
            v = w_v @ layer_norm(x, blk.ln_1) + b_v
            v = blk.attn.out_proj.weight @ v + blk.attn.out_proj.bias + x
            h = blk.mlp.c_fc.weight @ layer_norm(v, blk.ln_2) + \
                blk.mlp.c_fc.bias
            h = h * torch.sigmoid(1.702 * h)
            v = v + blk.mlp.c_proj.weight @ h + blk.mlp.c_proj.bias
            f = layer_norm(v, visual.ln_post) @ visual.proj
            out[b, t - 1] = f / f.norm()
    return out


@torch.no_grad()
def test_value_path_equals_brute_force_and_self_only_attention(vit):
    torch.manual_seed(1)
    tokens = torch.randn(2, 17, 64)
    got = vit_local_features(vit, tokens)
    assert got.shape == (2, 16, 64)
    torch.testing.assert_close(got, brute_force_local(vit, tokens),
                               rtol=1e-4, atol=1e-5)
    # the value path is the block's attention with each token attending to
    # itself only (nn.MultiheadAttention, sequence-first, diagonal mask)
    blk = vit.transformer.resblocks[-1]
    x = tokens.transpose(0, 1)
    mask = torch.full((17, 17), float('-inf')).fill_diagonal_(0)
    v = blk.attn(blk.ln_1(x), blk.ln_1(x), blk.ln_1(x), need_weights=False,
                 attn_mask=mask)[0] + x
    v = v + blk.mlp(blk.ln_2(v))
    ref = F.normalize(vit.ln_post(v.transpose(0, 1)[:, 1:]) @ vit.proj,
                      dim=-1)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    raw = vit_local_features(vit, tokens, normalize=False)
    torch.testing.assert_close(F.normalize(raw, dim=-1), got)


@torch.no_grad()
def test_fast_tower_and_clip_forward_give_the_same_tokens_and_features(vit):
    torch.manual_seed(2)
    images = torch.randn(3, 3, 32, 32)
    tap = LastBlockTap(vit)
    try:
        fast = encode_image_vit(vit, images)
        fast_tokens, step = tap.value.clone(), tap.step
        own = vit(images)
        own_tokens = tap.value.clone()
    finally:
        tap.remove()
    assert step == 1 and tap.step == 2  # one capture per forward
    assert fast_tokens.shape == own_tokens.shape == (3, 17, 64)
    torch.testing.assert_close(fast_tokens, own_tokens, rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(fast, own, rtol=1e-5, atol=1e-5)
    # the class token of the captured input recomputes the embedding
    torch.testing.assert_close(vit_class_token_embedding(vit, own_tokens),
                               own, rtol=1e-5, atol=1e-5)
    g1, l1 = encode_image_local_vit(vit, images, fast=True)
    g2, l2 = encode_image_local_vit(vit, images, fast=False)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g1, F.normalize(own, dim=-1), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(l1, vit_local_features(vit, own_tokens),
                               rtol=1e-5, atol=1e-5)
    # the shared tap is one per tower; removed taps no longer capture
    assert last_block_tap(vit) is last_block_tap(vit)
    vit(images)
    assert tap.step == 2


def test_resnet_towers_and_bad_tokens_are_refused(vit):
    rn = build_clip('tiny-rn-32px', None).visual
    with pytest.raises(ValueError, match='VisionTransformer'):
        LastBlockTap(rn)
    with pytest.raises(ValueError, match='width 64'):
        vit_local_features(vit, torch.randn(2, 17, 32))
