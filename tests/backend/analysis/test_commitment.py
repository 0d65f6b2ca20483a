"""Commitment analysis against hand-computed cases, scipy and scikit-learn."""

from itertools import combinations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
from sklearn.neighbors import NearestCentroid

from backend.analysis.commitment import (
    auroc,
    commitment,
    consistency,
    correlate,
    correlation_grid,
    divergence_step,
    held_out_best_cell,
    mean_pairwise_cosine,
    outcome_separation,
    partial_correlation,
    run_similarity,
    surface_agreement,
    surface_agreement_by_step,
)


def test_mean_pairwise_cosine_by_hand_and_against_sklearn():
    v = np.array([[1.0, 0], [0, 1], [1, 1]])
    assert mean_pairwise_cosine(v) == pytest.approx((0 + 2 * np.sqrt(0.5)) / 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 4, 16))  # runs, layers, steps, d
    got = mean_pairwise_cosine(x)
    assert got.shape == (3, 4)
    for li in range(3):
        for k in range(4):
            c = cosine_similarity(x[:, li, k])
            assert got[li, k] == pytest.approx(c[np.triu_indices(6, 1)].mean())


def test_mean_pairwise_cosine_skips_runs_that_ended():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3, 8))  # runs, steps, d
    valid = np.ones((4, 3), bool)
    valid[3, 1:] = False  # run 3 stopped after step 0
    valid[1:, 2] = False  # only run 0 reaches step 2
    got = mean_pairwise_cosine(x, valid)
    c = cosine_similarity(x[:3, 1])
    assert got[1] == pytest.approx(c[np.triu_indices(3, 1)].mean())
    assert np.isnan(got[2])


def test_commitment_divergence_and_consistency_by_hand():
    st = np.zeros((2, 1, 3, 2))
    st[:, 0, :, 0] = 1
    st[1, 0, 2] = [0, 1]
    c = commitment(st, [["a", "b", "c"], ["a", "b", "d"]])
    assert c.similarity[0].tolist() == [1, 1, 0] and c.divergence_step == 2
    assert c.runs_at_step.tolist() == [2, 2, 2] and c.n_runs == 2
    assert divergence_step([["a", "b"], ["a", "b"]]) is None
    assert divergence_step([["a", "<eos>"], ["a", "b", "<eos>"]]) == 1
    assert divergence_step([["a"], ["a", "b"]]) is None  # a run that ended takes no part
    assert consistency(["x", "x", "y"]) == pytest.approx(1 / 3)
    outs = list("aabbbc")
    pairs = list(combinations(outs, 2))
    assert consistency(outs) == pytest.approx(np.mean([a == b for a, b in pairs]))
    assert np.isnan(consistency(["x"]))


def test_run_similarity_equals_sklearn():
    x = np.random.default_rng(2).normal(size=(5, 7))
    np.testing.assert_allclose(run_similarity(x), cosine_similarity(x), atol=1e-12)


def test_correlations_match_scipy_including_ties_and_nans():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    y = x + rng.normal(size=40)
    y[::5] = np.round(y[::5])  # some ties
    x_t = np.round(x, 1)
    x_t[3] = np.nan  # dropped pairwise
    for a in (x, x_t):
        r = correlate(a, y, n_boot=0)
        ok = np.isfinite(a)
        assert r.pearson == pytest.approx(stats.pearsonr(a[ok], y[ok])[0], abs=1e-12)
        assert r.spearman == pytest.approx(stats.spearmanr(a[ok], y[ok])[0], abs=1e-12)
        assert r.n == ok.sum()
    assert np.isnan(correlate([1, 1, 1, 1], [1, 2, 3, 4]).pearson)
    assert np.isnan(correlate([1, 2], [1, 2]).pearson)


def test_bootstrap_interval_agrees_with_scipy_bootstrap():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = 0.6 * x + rng.normal(size=30)
    ours = correlate(x, y, n_boot=4000, seed=1)
    ref = stats.bootstrap(
        (x, y),
        lambda a, b: stats.pearsonr(a, b)[0],
        paired=True,
        vectorized=False,
        n_resamples=4000,
        method="percentile",
        rng=np.random.default_rng(2),
    ).confidence_interval
    assert ours.ci_low == pytest.approx(ref.low, abs=0.04)
    assert ours.ci_high == pytest.approx(ref.high, abs=0.04)
    assert ours.ci_low < ours.pearson < ours.ci_high


def test_correlation_grid_matches_scipy_per_cell():
    rng = np.random.default_rng(4)
    sims = rng.uniform(size=(12, 3, 4))
    cons = rng.uniform(size=12)
    sims[:, 1, 2] = cons * 2 + 0.01 * rng.normal(size=12)  # a strongly predictive cell
    sims[:4, 0, 3] = np.nan  # some prompts lack the step
    sims[:, 2, 0] = 1.0  # step 0: identical runs, constant
    g = correlation_grid(sims, cons)
    for li in range(3):
        for k in range(4):
            ok = np.isfinite(sims[:, li, k])
            if np.ptp(sims[ok, li, k]) == 0:
                assert np.isnan(g.r[li, k])
                continue
            assert g.r[li, k] == pytest.approx(stats.pearsonr(sims[ok, li, k], cons[ok])[0])
            assert g.n[li, k] == ok.sum()
    assert g.best == (1, 2)
    with pytest.raises(ValueError, match="one consistency per prompt"):
        correlation_grid(sims, cons[:5])


def _clusters(rng, n_prompts=6, runs=5, n_layers=3, d=8):
    """Runs of several prompts whose deltas separate by outcome at layer 2 only."""
    groups = np.repeat(np.arange(n_prompts), runs)
    y = rng.uniform(size=len(groups)) < 0.5
    y[:2], y[2:4] = True, False
    x = rng.normal(size=(len(groups), n_layers, d))
    x[:, 2, 0] += np.where(y, 3.0, -3.0)
    return x, y, groups


def test_outcome_separation_matches_sklearn_nearest_centroid_leave_one_prompt_out():
    rng = np.random.default_rng(5)
    x, y, groups = _clusters(rng)
    sep = outcome_separation(x, y, groups)
    assert sep.judged.all() and sep.best_layer == 2
    for li in range(3):
        pred = cross_val_predict(
            NearestCentroid(), x[:, li], y, groups=groups, cv=LeaveOneGroupOut()
        )
        assert sep.predicted(li).tolist() == pred.tolist()
        assert sep.accuracy[li] == pytest.approx((pred == y).mean())
        assert sep.auroc[li] == pytest.approx(roc_auc_score(y, sep.score[li]))
        assert set(sep.misjudged(li)) == set(np.flatnonzero(pred != y))
    assert sep.accuracy[2] > 0.9 and sep.auroc[2] > 0.95


def test_outcome_separation_skips_prompts_whose_rest_lacks_a_class():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 2, 4))
    y = np.array([True, False, True, True, True, True])
    groups = np.array([0, 0, 1, 1, 2, 2])
    sep = outcome_separation(x, y, groups)
    # holding out prompt 0 removes the only failure: its runs cannot be judged
    assert sep.judged.tolist() == [False, False, True, True, True, True]
    assert np.isnan(sep.auroc).all()  # judged runs are all successes
    with pytest.raises(ValueError, match="both successful and failed"):
        outcome_separation(x, np.ones(6, bool), groups)
    with pytest.raises(ValueError, match="at least two prompts"):
        outcome_separation(x, y, np.zeros(6))


def test_auroc_with_ties_equals_sklearn():
    s = np.array([0.1, 0.4, 0.4, 0.8, 0.2, 0.4])
    p = np.array([0, 1, 0, 1, 0, 1], bool)
    assert auroc(s, p) == pytest.approx(roc_auc_score(p, s))


def test_spearman_is_tie_aware_with_permutation_p_and_bootstrap_interval():
    rng = np.random.default_rng(7)
    x = rng.normal(size=60)
    y = np.round(x + rng.normal(size=60))  # many ties in y
    x[:15] = 1.0
    c = correlate(x, y, n_boot=1000, n_perm=2000)
    ref = stats.spearmanr(x, y)
    assert c.spearman == pytest.approx(ref.statistic, abs=1e-12)
    # the permutation p-value against scipy's own permutation test of the same statistic
    perm = stats.permutation_test(
        (x, y),
        lambda a, b: stats.spearmanr(a, b).statistic,
        permutation_type="pairings",
        n_resamples=2000,
        rng=np.random.default_rng(1),
    )
    assert c.spearman_p == pytest.approx(perm.pvalue, abs=0.01) and c.spearman_p < 0.01
    assert c.spearman_ci_low < c.spearman < c.spearman_ci_high
    assert c.available and c.needed == 0
    assert c.tied_x == pytest.approx(15 / 60) and c.tied_y > 0.9
    assert "values are tied" in c.warning and "y" in c.warning


def test_ties_hand_case_and_rounding_noise_is_a_tie():
    # ranks of x: 1, 2.5, 2.5, 4, 5, 6.5, 6.5, 8 (1 - 1e-12 ties with 1); y: 1..8
    x = [0.1, 0.5, 0.5, 0.7, 0.8, 1.0, 1.0 - 1e-12, 1.0 + 1e-12]
    y = [1, 2, 3, 4, 5, 6, 7, 8]
    c = correlate(x, y, n_boot=0, n_perm=0)
    rx = np.array([1, 2.5, 2.5, 4, 5, 7, 7, 7])
    ry = np.arange(1, 9.0)
    dx, dy = rx - rx.mean(), ry - ry.mean()
    want = (dx * dy).sum() / np.sqrt((dx * dx).sum() * (dy * dy).sum())
    assert c.spearman == pytest.approx(want, abs=1e-12)
    assert c.tied_x == pytest.approx(5 / 8)
    # without rounding, noise at 1e-12 ranks the three "ones"
    exact = correlate(x, y, n_boot=0, n_perm=0, tie_decimals=None)
    assert exact.spearman == pytest.approx(stats.spearmanr(x, y).statistic)
    assert exact.spearman != pytest.approx(want)


def test_small_n_reports_no_correlation_and_how_many_more_prompts():
    c = correlate([0.1, 0.5, 0.9], [0, 0.5, 1])  # the page showed r = 1.00 [1.00, 1.00]
    assert not c.available and np.isnan(c.pearson) and np.isnan(c.ci_low)
    assert c.needed == 5 and "5 more" in c.warning
    rng = np.random.default_rng(0)
    x = rng.normal(size=10)
    c = correlate(x, x + rng.normal(size=10))
    assert c.available and "only 10 prompts" in c.warning.lower()
    assert 0 < c.pearson_p <= 1 and np.isfinite(c.spearman_p)


def test_surface_agreement_by_hand():
    runs = [["a", "b", "c"], ["a", "x", "c"], ["z", "b"]]
    # step 1 (read token 0): pairs (0,1) agree, (0,2) and (1,2) do not -> 1/3
    # step 2 (tokens 0-1): (0,1) 1/2, (0,2) 1/2, (1,2) 0 -> 1/3
    # step 3 (tokens 0-2; run 2 has only two): (0,1) 2/3, (0,2) 1/2, (1,2) 0 -> 7/18
    got = surface_agreement_by_step(runs, 5)
    np.testing.assert_allclose(got, [1, 1 / 3, 1 / 3, 7 / 18, 7 / 18])
    assert surface_agreement(runs, 3) == pytest.approx(7 / 18)
    assert surface_agreement_by_step([[1, 2], [1, 2]], 3).tolist() == [1, 1, 1]
    assert np.isnan(surface_agreement_by_step([[1, 2]], 3)).all()


def test_partial_correlation_equals_the_formula_and_residual_regression():
    rng = np.random.default_rng(11)
    z = rng.normal(size=50)
    x = z + 0.8 * rng.normal(size=50)
    y = z + 0.3 * x + rng.normal(size=50)
    pc = partial_correlation(x, y, z, n_boot=500, n_perm=500)
    r = lambda a, b: stats.pearsonr(a, b)[0]
    rxy, rxz, ryz = r(x, y), r(x, z), r(y, z)
    want = (rxy - rxz * ryz) / np.sqrt((1 - rxz**2) * (1 - ryz**2))
    assert pc.r == pytest.approx(want, abs=1e-10) and pc.raw == pytest.approx(rxy)
    assert pc.raw > pc.r > 0 and pc.n == 50 and pc.available
    # t-test with n - 3 degrees of freedom
    t = want * np.sqrt(47 / (1 - want**2))
    assert pc.p == pytest.approx(2 * stats.t.sf(abs(t), 47))
    assert pc.ci_low < pc.r < pc.ci_high and 0 < pc.perm_p <= 1
    # Spearman: the same formula on ranks
    ps = partial_correlation(x, y, z, method="spearman", n_boot=0, n_perm=0)
    s = lambda a, b: stats.spearmanr(a, b)[0]
    sxy, sxz, syz = s(x, y), s(x, z), s(y, z)
    assert ps.r == pytest.approx((sxy - sxz * syz) / np.sqrt((1 - sxz**2) * (1 - syz**2)))
    # two covariates: residuals of a least-squares fit with intercept (numpy lstsq)
    z2 = np.c_[z, rng.normal(size=50)]
    d = np.c_[np.ones(50), z2]
    res = lambda v: v - d @ np.linalg.lstsq(d, v, rcond=None)[0]
    p2 = partial_correlation(x, y, z2, n_boot=0, n_perm=0)
    assert p2.r == pytest.approx(r(res(x), res(y)))
    assert not partial_correlation(x[:5], y[:5], z[:5]).available


def test_commitment_explained_by_surface_agreement_has_a_small_partial():
    """Commitment that only re-measures first-token agreement: raw r large, partial ~ 0."""
    rng = np.random.default_rng(3)
    surface = rng.uniform(size=200)
    consistency_ = np.clip(surface + 0.3 * rng.normal(size=200), 0, 1)
    commit = surface + 0.05 * rng.normal(size=200)
    pc = partial_correlation(commit, consistency_, surface, n_boot=300, n_perm=300)
    assert pc.raw > 0.6 and abs(pc.r) < 0.15 and pc.ci_low < 0 < pc.ci_high


def test_held_out_best_cell_is_unbiased_on_noise():
    rng = np.random.default_rng(0)
    held, insample = [], []
    for rep in range(60):
        sims = rng.normal(size=(40, 5, 9))  # 45 cells of pure noise
        cons = rng.uniform(size=40)
        h = held_out_best_cell(sims, cons, seed=rep)
        assert h.n_select == 20 and h.n_test == 20 and h.select.sum() == 20
        held.append(h.r)
        insample.append(np.nanmax(np.abs(correlation_grid(sims, cons).r)))
        assert abs(h.r_select) >= 0.3  # the chosen cell looks good where it was chosen
    held = np.array(held)
    assert abs(held.mean()) < 0.06 and np.mean(insample) > 0.3
    # a real cell is found and confirmed; the partial with z = the same signal is ~ 0
    sims = rng.normal(size=(60, 3, 4))
    cons = rng.uniform(size=60)
    surface = np.tile(cons[:, None], (1, 4)) + 0.1 * rng.normal(size=(60, 4))
    sims[:, 1, 2] = surface[:, 2] + 0.01 * rng.normal(size=60)
    h = held_out_best_cell(sims, cons, z=surface, seed=1)
    assert (h.layer, h.step) == (1, 2) and h.r > 0.8 and abs(h.partial_r) < 0.5
    assert h.held_out.n == h.n_test == 30 and h.held_out_partial.n == 30
