"""Bootstrap intervals of the OoD metrics
(cma_ood.evaluation.functional.bootstrap_ood_metrics)."""
import math

import numpy as np
import pytest

from cma_ood.evaluation import functional
from cma_ood.evaluation.functional import (bootstrap_indices,
                                           bootstrap_ood_metrics, ood_metrics,
                                           percentile_interval)

PROTOCOLS = ('mos', 'cma', 'openood')
KEYS = ('AUROC', 'FPR95', 'AUPR_IN', 'AUPR_OUT')


def explicit_resamples(ind, ood_sets, num, seed):
    """Resample r of every set, drawn by hand from bootstrap_indices: the
    ID set is stream 0, the j-th OoD set stream 1 + j; resampling draws
    ranks of the sorted scores."""
    id_idx = bootstrap_indices(len(ind), num, seed, 0)
    ood_idx = [bootstrap_indices(len(o), num, seed, 1 + j)
               for j, o in enumerate(ood_sets)]
    for r in range(num):
        yield (np.sort(ind)[id_idx[r]],
               [np.sort(o)[idx[r]] for o, idx in zip(ood_sets, ood_idx)])


def cases():
    rng = np.random.default_rng(0)
    # heavy ties within and across the sets (integer scores)
    yield 'integers', rng.integers(1, 5, 40) * 1.0, [
        rng.integers(0, 4, 30) * 1.0, rng.integers(0, 3, 7) * 1.0]
    # continuous, plus OoD values equal to ID values near the top (the
    # OpenOOD crossing point ties with ID scores)
    ind = np.round(rng.normal(1, 1, 60), 1)
    ood = np.round(rng.normal(0, 1, 45), 1)
    ood[:6] = ind[:6]
    yield 'rounded', ind, [ood]
    # saturated scores: many exactly 1.0 on both sides
    yield 'saturated', np.minimum(rng.normal(1.3, 0.5, 50), 1.0), [
        np.minimum(rng.normal(0.6, 0.5, 50), 1.0)]
    # every value distinct
    yield 'distinct', rng.normal(1, 1, 33), [rng.normal(0, 1, 21)]
    # degenerate sizes and all equal
    yield 'tiny', np.array([0.5]), [np.array([0.5, 0.2])]
    yield 'constant', np.ones(9), [np.ones(4)]


@pytest.mark.parametrize('protocol', PROTOCOLS)
def test_each_resample_equals_ood_metrics_of_the_resampled_arrays(protocol):
    num = 6
    for name, ind, ood_sets in cases():
        seed = len(name)
        got = bootstrap_ood_metrics(
            {'s': ind, 'neg': -ind},
            {f'o{j}': {'s': o, 'neg': -o} for j, o in enumerate(ood_sets)},
            protocol=protocol, num_resamples=num, seed=seed)
        for sign, score in ((1, 's'), (-1, 'neg')):
            resamples = explicit_resamples(sign * ind,
                                           [sign * o for o in ood_sets],
                                           num, seed)
            for r, (id_r, oods_r) in enumerate(resamples):
                for j, ood_r in enumerate(oods_r):
                    want = ood_metrics(id_r, ood_r, protocol=protocol)
                    for key in KEYS:
                        assert got[score][f'o{j}'][key][r] == pytest.approx(
                            want[key], abs=1e-9), (name, score, r, key)


def test_no_dependence_on_chunks_threads_or_other_scores(monkeypatch):
    rng = np.random.default_rng(1)
    ind = {'a': rng.normal(1, 1, 300), 'b': np.round(rng.normal(1, 1, 300))}
    ood = {'x': {'a': rng.normal(0, 1, 200), 'b': np.round(
        rng.normal(0, 1, 200))}, 'y': {'a': rng.normal(0, 1, 50)}}
    ref = bootstrap_ood_metrics(ind, ood, num_resamples=40, seed=3,
                                num_threads=1)
    monkeypatch.setattr(functional, '_CHUNK_ELEMENTS', 1000)  # 3 per chunk
    chunked = bootstrap_ood_metrics(ind, ood, num_resamples=40, seed=3,
                                    num_threads=2)
    alone = bootstrap_ood_metrics({'a': ind['a']},
                                  {'x': {'a': ood['x']['a']},
                                   'y': {'a': ood['y']['a']}},
                                  num_resamples=40, seed=3)
    assert set(ref) == {'a', 'b'} and set(ref['b']) == {'x'}
    for score, by_set in ref.items():
        for s, by_key in by_set.items():
            for key, arr in by_key.items():
                assert arr.shape == (40, )
                np.testing.assert_array_equal(chunked[score][s][key], arr)
                if score == 'a':
                    np.testing.assert_array_equal(alone['a'][s][key], arr)
    other = bootstrap_ood_metrics(ind, ood, num_resamples=40, seed=4)
    assert not np.array_equal(other['a']['x']['AUROC'],
                              ref['a']['x']['AUROC'])


def test_the_ood_sets_are_resampled_independently_of_the_id_set():
    # a constant OoD set: AUROC varies only through the ID resample, which
    # every OoD set of a score shares
    rng = np.random.default_rng(2)
    ind = rng.normal(0, 1, 80)
    out = bootstrap_ood_metrics(
        {'s': ind}, {'p': {'s': np.zeros(10)}, 'q': {'s': np.zeros(30)}},
        num_resamples=25)['s']
    np.testing.assert_allclose(out['p']['AUROC'], out['q']['AUROC'])
    want = [100 * np.mean(r > 0) for r, _ in explicit_resamples(
        ind, [], 25, 0)]
    np.testing.assert_allclose(out['p']['AUROC'], want)


def test_interval_coverage_of_a_known_auroc():
    """ID ~ N(d, 1), OoD ~ N(0, 1): AUROC = Phi(d / sqrt 2). Over 200
    independent draws of 80 + 60 scores the 95% percentile interval (300
    resamples, another seed per draw) must hold the true AUROC in roughly
    90-99% of the draws (seeded: deterministic)."""
    d, draws, n, m = 1.0, 200, 80, 60
    true = 100 * 0.5 * (1 + math.erf(d / math.sqrt(2) / math.sqrt(2)))
    rng = np.random.default_rng(20261202)
    covered, widths = [], []
    for k in range(draws):
        boot = bootstrap_ood_metrics(
            {'s': rng.normal(d, 1, n)}, {'o': {'s': rng.normal(0, 1, m)}},
            num_resamples=300, seed=k)
        lo, hi = percentile_interval(boot['s']['o']['AUROC'])
        covered.append(lo <= true <= hi)
        widths.append(hi - lo)
    coverage = float(np.mean(covered))
    assert 0.90 <= coverage <= 0.99, coverage
    # and the intervals are not trivially wide: about 2 x 1.96 x the
    # AUROC's standard error (Hanley-McNeil: ~4.3 points here)
    assert 13 < np.mean(widths) < 21, np.mean(widths)


def test_percentile_interval():
    x = np.arange(1001.0)
    assert percentile_interval(x, 0.95) == pytest.approx((25.0, 975.0))
    assert percentile_interval(x[::-1], 0.5) == pytest.approx((250.0, 750.0))
    lo, hi = percentile_interval([3.0, 1.0, 2.0], 0.9)
    assert (lo, hi) == pytest.approx(np.percentile([1, 2, 3], [5, 95]))
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match='level'):
            percentile_interval(x, bad)
    with pytest.raises(ValueError, match='no samples'):
        percentile_interval([], 0.95)


def test_bad_inputs_are_named():
    ind = np.ones(5)
    with pytest.raises(ValueError, match='unknown metric protocol'):
        bootstrap_ood_metrics({'s': ind}, {'o': {'s': ind}}, protocol='x')
    with pytest.raises(ValueError, match='num_resamples'):
        bootstrap_ood_metrics({'s': ind}, {'o': {'s': ind}}, num_resamples=0)
    with pytest.raises(ValueError, match='seed'):
        bootstrap_ood_metrics({'s': ind}, {'o': {'s': ind}}, seed=-1)
    with pytest.raises(ValueError, match="'t' of OoD set 'o' has no ID"):
        bootstrap_ood_metrics({'s': ind}, {'o': {'t': ind}})
    with pytest.raises(ValueError, match='same images'):
        bootstrap_ood_metrics({'s': ind, 't': np.ones(4)}, {})
    with pytest.raises(ValueError, match=r"ood_scores\['o'\]\['s'\] holds 1 "
                       'non-finite'):
        bootstrap_ood_metrics({'s': ind},
                              {'o': {'s': np.array([1.0, np.nan])}})
