"""Tests of the post-hoc scores in cma_ood.models.ood_scorers.functional.logit."""
import math

import numpy as np
import pytest
import torch

from cma_ood.models.ood_scorers.functional.logit import (energy_score, max_logit_score,
                                       mcm_score, msp_score)


def np_max_softmax(z):
    """Direct float64 formula max_c exp(z_c) / sum_c exp(z_c) (no shifting).

    Only valid where exp(z) does not overflow float64 (|z| < ~700).
    """
    e = np.exp(np.asarray(z, dtype=np.float64))
    return e.max(axis=1) / e.sum(axis=1)


def np_energy(z, t):
    z = np.asarray(z, dtype=np.float64)
    return t * np.log(np.exp(z / t).sum(axis=1))


@pytest.fixture
def cos_sim():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1000, generator=g) * 0.1
    x[:8, 3] = 0.999  # confident rows: cos/0.01 close to 100
    return x.clamp(-1, 1)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 17, generator=g) * 4


# ------------------------------------------------------------------ MCM
@pytest.mark.parametrize('tau', [0.01, 0.05, 1.0])
def test_mcm_matches_formula(cos_sim, tau):
    out = mcm_score(cos_sim, temperature=tau)
    assert out.shape == (cos_sim.shape[0],)
    assert out.dtype == torch.float32
    ref = np_max_softmax(cos_sim.double().numpy() / tau)
    np.testing.assert_allclose(out.numpy(), ref, rtol=2e-5, atol=0)


def test_mcm_default_is_the_published_t1_on_the_cosine(cos_sim):
    """MCM's eval_ood_detection.py --T 1: softmax of the raw cosine."""
    ref = np_max_softmax(cos_sim.double().numpy())
    np.testing.assert_allclose(mcm_score(cos_sim).numpy(), ref, rtol=2e-5)
    assert not torch.allclose(mcm_score(cos_sim),
                              mcm_score(cos_sim, temperature=0.01))


def test_mcm_scorer_default_is_t1_and_t001_is_clip_msp(cos_sim):
    """MCMScorer() is MCM at T = 1; at T = 0.01 it equals MSPScorer on
    CLIP's logits with the pretrained logit scale 100."""
    from cma_ood.models import MCMScorer, MSPScorer
    embeds = torch.zeros(cos_sim.shape[0], 4)
    scale = torch.tensor(100.0)
    assert MCMScorer().temperature == 1.0
    ref = np_max_softmax(cos_sim.double().numpy())
    np.testing.assert_allclose(
        MCMScorer()(embeds, cos_sim, scale).numpy(), ref, rtol=2e-5)
    torch.testing.assert_close(
        MCMScorer(temperature=0.01)(embeds, cos_sim, scale),
        MSPScorer()(embeds, cos_sim, scale))


def test_mcm_no_overflow_at_cos_100():
    # cos/0.01 = 100: exp(100) ~ 2.7e43 overflows float32 in a naive softmax.
    x = torch.full((3, 5), -1.0)
    x[:, 0] = 1.0
    x[1, 1] = 1.0
    x[2, 1] = 0.99
    assert torch.isinf(torch.exp(x / 0.01)).any()  # naive route overflows
    out = mcm_score(x, temperature=0.01)
    assert torch.isfinite(out).all()
    # Closed forms: row 0 -> 1 / (1 + 4 e^-200); row 1 -> 1/2 (+ tiny);
    # row 2 -> 1 / (1 + e^-1 + 3 e^-200).
    expected = torch.tensor([1 / (1 + 4 * math.exp(-200)),
                             1 / (2 + 3 * math.exp(-200)),
                             1 / (1 + math.exp(-1) + 3 * math.exp(-200))])
    torch.testing.assert_close(out, expected)


def test_mcm_uniform_is_one_over_c():
    out = mcm_score(torch.full((4, 250), 0.3))
    torch.testing.assert_close(out, torch.full((4,), 1 / 250))


def test_half_input_computed_in_float32(cos_sim):
    out = mcm_score(cos_sim.half(), temperature=0.01)
    assert out.dtype == torch.float32
    ref = np_max_softmax(cos_sim.half().double().numpy() / 0.01)
    np.testing.assert_allclose(out.numpy(), ref, rtol=2e-5)
    out_bf = energy_score(cos_sim.bfloat16() * 10)
    assert out_bf.dtype == torch.float32


def test_float64_kept(logits):
    assert msp_score(logits.double()).dtype == torch.float64
    assert energy_score(logits.double()).dtype == torch.float64


# ------------------------------------------------------------------ MSP
def test_msp_matches_formula(logits):
    out = msp_score(logits)
    assert out.shape == (logits.shape[0],)
    np.testing.assert_allclose(out.numpy(), np_max_softmax(logits.numpy()),
                               rtol=1e-5)


def test_msp_large_logits_closed_form():
    # [1000, 999, 0]: naive exp overflows even float64; p = 1/(1+e^-1+e^-1000)
    x = torch.tensor([[1000.0, 999.0, 0.0], [-1000.0, -1000.0, -1000.0]],
                     dtype=torch.float64)
    out = msp_score(x)
    torch.testing.assert_close(
        out, torch.tensor([1 / (1 + math.exp(-1)), 1 / 3],
                          dtype=torch.float64))


def test_msp_equals_mcm_with_unit_temperature(logits):
    torch.testing.assert_close(msp_score(logits),
                               mcm_score(logits, temperature=1.0))


# ------------------------------------------------------------- max logit
def test_max_logit(logits):
    out = max_logit_score(logits)
    assert out.shape == (logits.shape[0],)
    np.testing.assert_array_equal(out.numpy(), logits.numpy().max(axis=1))


# ---------------------------------------------------------------- energy
@pytest.mark.parametrize('t', [0.5, 1.0, 3.0])
def test_energy_matches_formula(logits, t):
    out = energy_score(logits, temperature=t)
    assert out.shape == (logits.shape[0],)
    np.testing.assert_allclose(out.numpy(), np_energy(logits.numpy(), t),
                               rtol=1e-5, atol=1e-5)


def test_energy_large_logits_closed_form():
    # T * logsumexp([a, a] / T) = a + T log 2 exactly, even for a = 1000.
    x = torch.full((2, 2), 1000.0)
    torch.testing.assert_close(energy_score(x), torch.full((2,), 1000.0 +
                                                           math.log(2)))
    torch.testing.assert_close(energy_score(x, temperature=2.0),
                               torch.full((2,), 1000.0 + 2 * math.log(2)))


def test_energy_tends_to_max_logit_as_t_vanishes(logits):
    torch.testing.assert_close(energy_score(logits.double(), 1e-4),
                               max_logit_score(logits.double()),
                               rtol=0, atol=1e-3)


# -------------------------------------------------------------- ordering
def test_higher_is_more_in_distribution():
    # Row 0 is confidently one class, row 1 is flat: row 0 scores higher.
    x = torch.tensor([[0.9, 0.1, 0.1], [0.3, 0.3, 0.3]])
    for fn in (mcm_score, msp_score, max_logit_score, energy_score):
        out = fn(x)
        assert out[0] > out[1], fn.__name__


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize('fn', [mcm_score, msp_score, max_logit_score,
                                energy_score])
def test_rejects_non_2d(fn):
    with pytest.raises(ValueError, match='2-D'):
        fn(torch.zeros(5))
    with pytest.raises(ValueError, match='at least one class'):
        fn(torch.zeros(5, 0))


@pytest.mark.parametrize('fn', [mcm_score, energy_score])
@pytest.mark.parametrize('t', [0.0, -0.01])
def test_rejects_bad_temperature(fn, t):
    with pytest.raises(ValueError, match='temperature'):
        fn(torch.zeros(2, 3), temperature=t)


def test_check_matrix_errors_name_the_input():
    from cma_ood.models.utils.checks import check_matrix
    check_matrix(torch.zeros(2, 3), 'x', dim=3)
    with pytest.raises(TypeError, match='x must be a torch.Tensor'):
        check_matrix([[0.0]], 'x')
    with pytest.raises(ValueError, match=r'x must be 2-D \(B, C\), got '
                       r'shape \(5,\)'):
        check_matrix(torch.zeros(5), 'x', '(B, C)')
    with pytest.raises(TypeError, match='floating'):
        check_matrix(torch.zeros(2, 3, dtype=torch.long), 'x')
    with pytest.raises(ValueError, match='feature dimension 3, expected 4'):
        check_matrix(torch.zeros(2, 3), 'x', dim=4)


@pytest.mark.parametrize('scorer', ['MCMScorer', 'EnergyScorer'])
def test_temperature_scorers_refuse_a_non_positive_temperature(scorer):
    import cma_ood.models as models
    with pytest.raises(ValueError, match=f'{scorer}: temperature must be'):
        getattr(models, scorer)(temperature=0.0)
