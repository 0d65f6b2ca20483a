"""The pair bootstrap: the mean is the plain mean, the interval matches the probes' bootstrap on
0/1 values and an independent loop-based percentile bootstrap on real values."""

import numpy as np
import pytest

from backend.analysis.patching import pair_interval
from backend.analysis.probes import pooled_interval


def test_same_interval_as_the_probes_bootstrap_on_binary_values():
    rng = np.random.default_rng(3)
    correct = rng.random((4, 40)) < 0.7  # (layers, prompts), one unit per prompt
    lo, hi, _ = pooled_interval(correct, np.arange(40), n_boot=500, seed=5)
    r = pair_interval(correct.T.astype(float), n_boot=500, seed=5)
    np.testing.assert_allclose(r.mean, correct.mean(1))
    np.testing.assert_allclose(r.lo, lo)
    np.testing.assert_allclose(r.hi, hi)


def test_matches_a_loop_bootstrap_and_keeps_the_shape():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(12, 3, 5))
    r = pair_interval(v, n_boot=300, seed=1)
    assert r.mean.shape == r.lo.shape == (3, 5) and r.n_pairs == 12
    g = np.random.default_rng(1)
    w = g.multinomial(12, np.full(12, 1 / 12), size=300)
    boots = np.stack([(np.repeat(v, wi, axis=0)).mean(0) for wi in w])
    np.testing.assert_allclose(r.lo, np.quantile(boots, 0.025, axis=0))
    np.testing.assert_allclose(r.hi, np.quantile(boots, 0.975, axis=0))
    assert (r.lo <= r.mean + 1e-12).all() and (r.mean <= r.hi + 1e-12).all()
    one = pair_interval(v[:1])
    np.testing.assert_array_equal(one.lo, v[0]) and "no interval" in one.description


def test_spearman_equals_scipy_with_ties_and_undefined_cases():
    from scipy.stats import spearmanr

    from backend.analysis.patching import spearman

    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 57):
        a, b = rng.normal(size=n), rng.normal(size=n)
        assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
        a, b = rng.integers(0, 3, n).astype(float), rng.integers(0, 4, n)  # many ties
        want = spearmanr(a, b).statistic
        got = spearman(a, b)
        assert (got is None and np.isnan(want)) or got == pytest.approx(want, abs=1e-12)
    assert spearman([1.0], [2.0]) is None and spearman([1, 1, 1], [1, 2, 3]) is None
