"""Single-process tests of the CMA loss (cma_ood.models.losses.cma_loss).

The reference below is written directly from the formula in
REFERENCE.md, section "CMA": full B x B matrices, one process.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from cma_ood.models import CMALoss, cma_loss

TOL = dict(rtol=1e-6, atol=1e-6)


pytestmark = pytest.mark.usefixtures('single_thread')


# ------------------------------------------------------------- reference
def ref_parts(image_embeds, text_embeds, logit_scale, lam):
    """The REFERENCE.md pseudo-code, verbatim, on raw embeddings."""
    I = F.normalize(image_embeds, dim=-1)  # noqa: E741
    T = F.normalize(text_embeds, dim=-1)
    B = I.shape[0]
    logits_per_image = logit_scale * I @ T.T
    logits_per_text = logits_per_image.T
    targets = torch.arange(B)
    ce_img = F.cross_entropy(logits_per_image, targets)
    ce_txt = F.cross_entropy(logits_per_text, targets)
    cma_img = (-torch.logsumexp(logits_per_image, dim=1)).mean()
    cma_txt = (-torch.logsumexp(logits_per_text, dim=1)).mean()
    loss = (ce_img + lam * cma_img) / 2 + (ce_txt + lam * cma_txt) / 2
    return dict(loss=loss,
                ce_img=ce_img,
                ce_txt=ce_txt,
                cma_img=cma_img,
                cma_txt=cma_txt)


def ref_loss(image_embeds, text_embeds, logit_scale, lam):
    return ref_parts(image_embeds, text_embeds, logit_scale, lam)['loss']


def plain_clip_loss(image_embeds, text_embeds, logit_scale):
    """Symmetric CLIP/FLYP loss, written as a softmax diagonal by hand."""
    I = F.normalize(image_embeds, dim=-1)  # noqa: E741
    T = F.normalize(text_embeds, dim=-1)
    logits = logit_scale * I @ T.T
    diag = torch.diagonal(logits)
    ce_img = -(diag - torch.log(torch.exp(logits).sum(1))).mean()
    ce_txt = -(diag - torch.log(torch.exp(logits).sum(0))).mean()
    return (ce_img + ce_txt) / 2


def make_inputs(B, D, scale, seed=0, dup=False, dtype=torch.float64):
    """Raw (unnormalised, rows of very different norms) embeddings.

    With ``dup`` several rows share the same text embedding (the same class
    appearing more than once in the batch) and, for B > 2, one image row is
    repeated as well.
    """
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(B, D, generator=g, dtype=dtype)
    txt = torch.randn(B, D, generator=g, dtype=dtype)
    # make matched pairs somewhat aligned, like a trained model
    txt = txt + 1.5 * img
    img = img * torch.exp(torch.randn(B, 1, generator=g, dtype=dtype))
    txt = txt * torch.exp(torch.randn(B, 1, generator=g, dtype=dtype))
    if dup and B >= 2:
        classes = torch.arange(B) % max(1, B // 2)  # every class twice-ish
        txt = txt[classes] * (1 + torch.rand(B, 1, generator=g, dtype=dtype))
        if B > 2:
            img[-1] = 3.0 * img[0]
    s = torch.tensor(scale, dtype=dtype)
    return img, txt, s


def value_and_grads(fn, img, txt, s):
    img = img.detach().clone().requires_grad_(True)
    txt = txt.detach().clone().requires_grad_(True)
    s = s.detach().clone().requires_grad_(True)
    loss = fn(img, txt, s)
    grads = torch.autograd.grad(loss, (img, txt, s))
    return loss.detach(), grads


# ------------------------------------------------------- main agreement
@pytest.mark.parametrize('dup', [False, True])
@pytest.mark.parametrize('D,scale', [(3, 1.0), (16, 1 / 0.07), (64, 100.0)])
@pytest.mark.parametrize('lam', [0.0, 0.001, 0.5, 3.0])
@pytest.mark.parametrize('B', [1, 2, 7, 32])
def test_value_and_grads_match_reference(B, lam, D, scale, dup):
    img, txt, s = make_inputs(B, D, scale, seed=B * 100 + D, dup=dup)
    crit = CMALoss(lam=lam)
    v, (gi, gt, gs) = value_and_grads(crit, img, txt, s)
    rv, (rgi, rgt, rgs) = value_and_grads(
        lambda a, b, c: ref_loss(a, b, c, lam), img, txt, s)
    assert v.ndim == 0 and v.dtype == torch.float64
    torch.testing.assert_close(v, rv, **TOL)
    torch.testing.assert_close(gi, rgi, **TOL)
    torch.testing.assert_close(gt, rgt, **TOL)
    torch.testing.assert_close(gs, rgs, **TOL)

    # the functional form agrees as well
    fv, (fgi, fgt, fgs) = value_and_grads(
        lambda a, b, c: cma_loss(a, b, c, lam=lam), img, txt, s)
    torch.testing.assert_close(fv, rv, **TOL)
    torch.testing.assert_close(fgi, rgi, **TOL)
    torch.testing.assert_close(fgt, rgt, **TOL)
    torch.testing.assert_close(fgs, rgs, **TOL)


@pytest.mark.parametrize('lam', [0.0, 0.001, 0.5, 3.0])
@pytest.mark.parametrize('B', [1, 2, 7, 32])
def test_forward_dict_parts_match_reference(B, lam):
    img, txt, s = make_inputs(B, 8, 1 / 0.07, seed=7 + B, dup=B > 3)
    img.requires_grad_(True)
    parts = CMALoss(lam=lam)(img, txt, s, output_dict=True)
    assert set(parts) >= {'loss', 'contrastive', 'alignment'}
    ref = ref_parts(img.detach(), txt, s, lam)
    contrastive = (ref['ce_img'] + ref['ce_txt']) / 2
    alignment = (ref['cma_img'] + ref['cma_txt']) / 2
    torch.testing.assert_close(parts['loss'].detach(), ref['loss'], **TOL)
    torch.testing.assert_close(parts['contrastive'], contrastive, **TOL)
    torch.testing.assert_close(parts['alignment'], alignment, **TOL)
    torch.testing.assert_close(
        parts['loss'].detach(),
        parts['contrastive'] + lam * parts['alignment'],
        rtol=1e-12,
        atol=1e-12)
    # loss carries the graph, the parts are detached logging values
    assert parts['loss'].requires_grad
    assert not parts['contrastive'].requires_grad
    assert not parts['alignment'].requires_grad
    for v in parts.values():
        assert v.ndim == 0


def test_forward_scalar_equals_the_dict_loss():
    img, txt, s = make_inputs(9, 12, 30.0, seed=3)
    crit = CMALoss(lam=0.25)
    torch.testing.assert_close(
        crit(img, txt, s),
        crit(img, txt, s, output_dict=True)['loss'],
        rtol=0,
        atol=0)


# ----------------------------------------------------------- closed form
@pytest.mark.parametrize('lam', [0.0, 0.001, 2.0])
@pytest.mark.parametrize('B', [1, 2, 5, 64])
@pytest.mark.parametrize('scale', [1.0, 100.0])
def test_closed_form_identical_embeddings(B, lam, scale):
    """All embeddings are copies of one unit vector: every logit equals s,
    so each CE term is log(B) and each cma term is -(s + log B)."""
    u = F.normalize(torch.randn(1, 6, dtype=torch.float64), dim=-1)
    img = u.repeat(B, 1)
    txt = u.repeat(B, 1)
    s = torch.tensor(scale, dtype=torch.float64)
    ref = ref_parts(img, txt, s, lam)
    exp_ce = torch.tensor(math.log(B), dtype=torch.float64)
    exp_cma = torch.tensor(-(scale + math.log(B)), dtype=torch.float64)
    for k in ('ce_img', 'ce_txt'):
        torch.testing.assert_close(ref[k], exp_ce, **TOL)
    for k in ('cma_img', 'cma_txt'):
        torch.testing.assert_close(ref[k], exp_cma, **TOL)
    parts = CMALoss(lam=lam)(img, txt, s, output_dict=True)
    torch.testing.assert_close(parts['contrastive'], exp_ce, **TOL)
    torch.testing.assert_close(parts['alignment'], exp_cma, **TOL)
    torch.testing.assert_close(parts['loss'], exp_ce + lam * exp_cma, **TOL)
    # raw (not unit) copies give the same: inputs are normalised inside
    torch.testing.assert_close(
        CMALoss(lam=lam)(7.0 * img, 0.5 * txt, s), exp_ce + lam * exp_cma,
        **TOL)


# -------------------------------------------------------------- FLYP
@pytest.mark.parametrize('B', [1, 2, 7, 32])
def test_lam_zero_is_plain_clip_loss(B):
    img, txt, s = make_inputs(B, 10, 1 / 0.07, seed=11 + B, dup=True)
    v, (gi, gt, gs) = value_and_grads(CMALoss(lam=0.0), img, txt, s)
    rv, (rgi, rgt, rgs) = value_and_grads(plain_clip_loss, img, txt, s)
    torch.testing.assert_close(v, rv, **TOL)
    torch.testing.assert_close(gi, rgi, **TOL)
    torch.testing.assert_close(gt, rgt, **TOL)
    torch.testing.assert_close(gs, rgs, **TOL)
    # the contrastive part is the CLIP loss whatever lam is
    torch.testing.assert_close(
        CMALoss(lam=3.0)(img, txt, s, output_dict=True)['contrastive'], rv, **TOL)


def test_reference_ce_matches_manual_softmax():
    """Sanity check of the test's own reference against a hand-written
    softmax (so the reference is not trusting F.cross_entropy blindly)."""
    img, txt, s = make_inputs(6, 5, 20.0, seed=5, dup=True)
    ref = ref_parts(img, txt, s, 0.0)
    torch.testing.assert_close(ref['loss'], plain_clip_loss(img, txt, s),
                               **TOL)
    logits = s * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    manual_cma_img = -torch.log(torch.exp(logits).sum(1)).mean()
    manual_cma_txt = -torch.log(torch.exp(logits).sum(0)).mean()
    torch.testing.assert_close(ref['cma_img'], manual_cma_img, **TOL)
    torch.testing.assert_close(ref['cma_txt'], manual_cma_txt, **TOL)


# -------------------------------------------------------- invariances
@pytest.mark.parametrize('lam', [0.0, 0.001, 1.0])
def test_row_rescaling_invariance(lam):
    B, D = 11, 7
    img, txt, s = make_inputs(B, D, 50.0, seed=21, dup=True)
    g = torch.Generator().manual_seed(99)
    ci = torch.exp(3 * torch.rand(B, 1, generator=g, dtype=img.dtype) - 1.5)
    ct = torch.exp(3 * torch.rand(B, 1, generator=g, dtype=img.dtype) - 1.5)
    crit = CMALoss(lam=lam)
    v, (gi, gt, gs) = value_and_grads(crit, img, txt, s)
    v2, (gi2, gt2, gs2) = value_and_grads(crit, ci * img, ct * txt, s)
    torch.testing.assert_close(v2, v, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gs2, gs, rtol=1e-10, atol=1e-10)
    # f(c x) = f(x)  =>  grad f at (c x) = grad f at x / c (row-wise)
    torch.testing.assert_close(gi2, gi / ci, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gt2, gt / ct, rtol=1e-8, atol=1e-10)


def test_permutation_of_pairs_invariance():
    img, txt, s = make_inputs(10, 6, 25.0, seed=4)
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    crit = CMALoss(lam=0.7)
    torch.testing.assert_close(crit(img[perm], txt[perm], s),
                               crit(img, txt, s),
                               rtol=1e-12,
                               atol=1e-12)


# ------------------------------------------------------------ gradcheck
@pytest.mark.parametrize('lam', [0.0, 0.5])
def test_gradcheck(lam):
    img, txt, s = make_inputs(3, 4, 2.5, seed=8, dup=False)
    img.requires_grad_(True)
    txt.requires_grad_(True)
    s.requires_grad_(True)
    crit = CMALoss(lam=lam)
    assert torch.autograd.gradcheck(crit, (img, txt, s), eps=1e-6, atol=1e-6)


def test_logit_scale_parameter_gets_gradient():
    """Typical use: logit_scale = model.logit_scale.exp()."""
    img, txt, _ = make_inputs(5, 8, 1.0, seed=2)
    log_s = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07),
                                            dtype=torch.float64))
    loss = CMALoss(lam=0.001)(img, txt, log_s.exp())
    loss.backward()
    rv, (_, _, rgs) = value_and_grads(
        lambda a, b, c: ref_loss(a, b, c, 0.001), img, txt, log_s.exp())
    torch.testing.assert_close(loss.detach(), rv, **TOL)
    torch.testing.assert_close(log_s.grad, rgs * log_s.exp().detach(), **TOL)


def test_float32_inputs():
    img, txt, s = make_inputs(16, 32, 1 / 0.07, seed=6, dtype=torch.float32)
    v = CMALoss(lam=0.001)(img, txt, s)
    assert v.ndim == 0 and v.dtype == torch.float32
    rv = ref_loss(img.double(), txt.double(), s.double(), 0.001)
    torch.testing.assert_close(v.double(), rv, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------- arguments
def test_default_lam_and_repr():
    crit = CMALoss()
    assert crit.lam == pytest.approx(0.001)
    assert crit.gather_with_grad is True
    assert 'lam=0.001' in repr(crit)


@pytest.mark.parametrize('lam', [-1e-9, -0.001, -1.0, float('nan'), float('inf')])
def test_negative_or_non_finite_lam_raises(lam):
    with pytest.raises(ValueError, match='finite and >= 0'):
        CMALoss(lam=lam)


def test_lam_zero_allowed():
    assert CMALoss(lam=0).lam == 0.0


@pytest.mark.parametrize('shape_i,shape_t', [
    ((4, 8), (4, 9)),
    ((4, 8), (3, 8)),
    ((8, ), (8, )),
    ((2, 4, 8), (2, 4, 8)),
])
def test_shape_mismatch_raises(shape_i, shape_t):
    s = torch.tensor(10.0, dtype=torch.float64)
    img = torch.randn(*shape_i, dtype=torch.float64)
    txt = torch.randn(*shape_t, dtype=torch.float64)
    crit = CMALoss(lam=0.001)
    with pytest.raises(ValueError):
        crit(img, txt, s)
    with pytest.raises(ValueError):
        crit(img, txt, s, output_dict=True)


def test_registered_in_mmpretrain_models():
    from mmpretrain.registry import MODELS
    crit = MODELS.build(dict(type='CMALoss', lam=0.5))
    assert isinstance(crit, CMALoss) and crit.lam == 0.5
    img, txt, s = make_inputs(4, 5, 10.0, seed=1)
    torch.testing.assert_close(crit(img, txt, s), ref_loss(img, txt, s, 0.5),
                               **TOL)
