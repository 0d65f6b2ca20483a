"""Layer statistics against hand-computed cases and numpy/scipy references."""

import numpy as np
import pytest

from backend.analysis import stats as ST


def _entropy_rank(s):
    p = np.asarray(s, float) / np.sum(s)
    return np.exp(-(p * np.log(p)).sum())


def test_effective_rank_by_hand():
    assert ST.effective_rank(np.eye(5)) == pytest.approx(5)
    assert ST.effective_rank(np.eye(7)[:3]) == pytest.approx(3)  # n < d path
    assert ST.effective_rank(np.outer(np.arange(1, 5), [1, 2, 3])) == pytest.approx(1)
    assert ST.effective_rank(np.diag([3.0, 1.0])) == pytest.approx(_entropy_rank([3, 1]))
    assert ST.effective_rank(np.zeros((4, 3))) == 0.0


def test_effective_rank_matches_the_svd_definition():
    RNG = np.random.default_rng(2)  # per test: order-independent
    x = RNG.normal(size=(50, 8)) * [5, 4, 3, 2, 1, 0.5, 0.2, 0.1]
    s = np.linalg.svd(x, compute_uv=False)
    assert ST.effective_rank(x) == pytest.approx(_entropy_rank(s), rel=1e-9)
    assert ST.effective_rank(x.T) == pytest.approx(_entropy_rank(s), rel=1e-9)


def test_anisotropy_by_hand_and_against_pairwise_cosines():
    RNG = np.random.default_rng(2)  # per test: order-independent
    assert ST.anisotropy(np.eye(4)) == pytest.approx(0)
    assert ST.anisotropy(np.ones((3, 2)) * [[1], [2], [5]]) == pytest.approx(1)
    assert ST.anisotropy(np.array([[1.0, 0], [-1.0, 0]])) == pytest.approx(-1)
    x = np.array([[1.0, 0], [0, 1], [1, 1]])
    assert ST.anisotropy(x) == pytest.approx(np.mean([0, np.sqrt(0.5), np.sqrt(0.5)]))
    from sklearn.metrics.pairwise import cosine_similarity

    y = RNG.normal(size=(30, 6)) + 1
    c = cosine_similarity(y)
    assert ST.anisotropy(y) == pytest.approx(c[~np.eye(30, dtype=bool)].mean())
    assert np.isnan(ST.anisotropy(y[:1]))


def test_layer_stats_finds_the_massive_activations_and_their_tokens():
    RNG = np.random.default_rng(2)  # per test: order-independent
    x = RNG.normal(size=(2, 10, 8)).astype(np.float32)
    x[1, 7, 3] = -500.0
    x[1, 2, 5] = 200.0
    st = ST.layer_stats(x, layers=(0, 4), top=3)
    assert st.layers == (0, 4)
    assert (st.massive_dim[1], st.massive_unit[1], st.top_values[1, 0]) == (3, 7, -500.0)
    assert (st.top_dims[1, 1], st.top_units[1, 1]) == (5, 2)
    assert st.max_abs[1] == 500 and st.massive_ratio[1] > 100 > st.massive_ratio[0]
    assert st.median_abs[0] == pytest.approx(np.median(np.abs(x[0])))
    norms = np.linalg.norm(x, axis=2)
    np.testing.assert_allclose(st.norm_quantiles[1], np.quantile(norms[1], ST.QUANTILES), rtol=1e-6)
    assert st.max_norm_unit[1] == 7


def test_layer_stats_input_errors():
    with pytest.raises(ValueError, match="n_layers, n_units, d"):
        ST.layer_stats(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        ST.layer_stats(np.full((1, 2, 2), np.inf))


def test_identical_massive_entries_are_reported_once():
    RNG = np.random.default_rng(2)  # per test: order-independent
    x = RNG.normal(size=(1, 6, 4)).astype(np.float32)
    x[0, [0, 2, 4], 1] = 90.0  # e.g. <bos> of three prompts
    x[0, 3, 2] = -40.0
    st = ST.layer_stats(x, top=2)
    assert st.top_values[0].tolist() == [90.0, -40.0]
    assert (st.top_dims[0].tolist(), st.top_units[0][1]) == ([1, 2], 3)
