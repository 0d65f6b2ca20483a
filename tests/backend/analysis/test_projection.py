import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from backend.analysis import projection as P


def _match_up_to_sign(got, want, atol):
    for k in range(got.shape[1]):
        s = np.sign(got[:, k] @ want[:, k])
        np.testing.assert_allclose(got[:, k], s * want[:, k], rtol=1e-3, atol=atol)


def test_pca_matches_sklearn_up_to_sign():
    RNG = np.random.default_rng(0)  # per test: order-independent
    x = RNG.normal(size=(3, 50, 10)).astype(np.float32) * np.arange(1, 11)
    proj = P.project(x, [0, 1, 2], "pca", dims=3)
    ref = PCA(3).fit(x.reshape(-1, 10).astype(np.float64))
    _match_up_to_sign(proj.coords.reshape(-1, 3), ref.transform(x.reshape(-1, 10)), 1e-3)
    np.testing.assert_allclose(proj.explained_variance, ref.explained_variance_ratio_, rtol=1e-4)
    assert proj.description == P.DESCRIPTIONS["pca"] and proj.n_points == 150


def test_tall_pca_covariance_route_matches_sklearn():
    """> 4096 rows goes through the covariance matrix; offset data checks the centring."""
    RNG = np.random.default_rng(0)  # per test: order-independent
    x = (RNG.normal(size=(3, 2000, 16)) * np.linspace(1, 4, 16) + 50).astype(np.float32)
    proj = P.project(x, [0, 1, 2], "pca", dims=2)
    ref = PCA(2, svd_solver="full").fit(x.reshape(-1, 16).astype(np.float64))
    _match_up_to_sign(proj.coords.reshape(-1, 2), ref.transform(x.reshape(-1, 16)), 2e-3)
    np.testing.assert_allclose(proj.explained_variance, ref.explained_variance_ratio_, rtol=1e-4)


def test_pca_is_one_shared_space_across_layers():
    """Shifting one layer moves its points, not the axes of the other layers' points."""
    RNG = np.random.default_rng(0)  # per test: order-independent
    base = RNG.normal(size=(40, 6)) * np.arange(6, 0, -1)
    x = np.stack([base, base + 20 * np.eye(6)[0]]).astype(np.float32)
    c = P.project(x, [0, 1], "pca").coords
    move = c[1] - c[0]  # the same rigid move for every unit, since the axes are shared
    assert move.std(axis=0).max() < 1e-3
    assert 19 < np.linalg.norm(move[0]) <= 20 + 1e-3


def test_standardize_equalises_layer_scales():
    RNG = np.random.default_rng(0)  # per test: order-independent
    x = np.stack([RNG.normal(size=(30, 5)), 100 * RNG.normal(size=(30, 5))]).astype(np.float32)
    c = P.project(x, [0, 1], "pca", standardize=True).coords
    ratio = np.abs(c[1]).mean() / np.abs(c[0]).mean()
    assert 0.5 < ratio < 2, ratio


def test_procrustes_recovers_a_known_rotation():
    RNG = np.random.default_rng(0)  # per test: order-independent
    a = RNG.normal(size=(40, 3))
    q, _ = np.linalg.qr(RNG.normal(size=(3, 3)))
    np.testing.assert_allclose(P.procrustes(a @ q, a), q.T, atol=1e-8)


def test_aligned_pca_undoes_a_rotation_between_layers():
    RNG = np.random.default_rng(0)  # per test: order-independent
    base = RNG.normal(size=(60, 2)) * [5, 2]
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    x = np.stack([base, base @ rot]).astype(np.float32)
    proj = P.project(x, [3, 4], "aligned")
    np.testing.assert_allclose(proj.coords[0], proj.coords[1], atol=1e-4)
    assert proj.explained_variance.shape == (2, 2) and proj.layers == (3, 4)


@pytest.mark.slow  # first UMAP fit in a process compiles numba code (~20 s)
def test_umap_is_deterministic_with_a_seed():
    RNG = np.random.default_rng(0)  # per test: order-independent
    x = RNG.normal(size=(2, 40, 6)).astype(np.float32)
    a = P.project(x, [0, 1], "umap", seed=3)
    b = P.project(x, [0, 1], "umap", seed=3)
    np.testing.assert_array_equal(a.coords, b.coords)
    assert a.coords.shape == (2, 40, 2) and a.seed == 3 and a.explained_variance is None


@pytest.mark.slow
def test_umap_reports_progress_and_can_be_cancelled():
    RNG = np.random.default_rng(0)  # per test: order-independent
    x = RNG.normal(size=(1, 60, 6)).astype(np.float32)
    stages = []
    P.project(x, [0], "umap", progress=lambda s, f: stages.append(s))
    assert {"PCA-50", "UMAP", "done"} <= set(stages)

    def cancel(stage, fraction):
        if stage == "UMAP" and fraction > 0:
            raise KeyboardInterrupt("stop")

    with pytest.raises(KeyboardInterrupt):
        P.project(x, [0], "umap", progress=cancel)


@pytest.mark.slow
def test_aligned_umap_is_deterministic_and_shaped():
    RNG = np.random.default_rng(0)  # per test: order-independent
    x = RNG.normal(size=(3, 30, 6)).astype(np.float32)
    a = P.project(x, [0, 1, 2], "aligned-umap", dims=3, seed=1).coords
    b = P.project(x, [0, 1, 2], "aligned-umap", dims=3, seed=1).coords
    assert a.shape == (3, 30, 3)
    np.testing.assert_array_equal(a, b)


def test_silhouette_matches_sklearn_and_separates_clusters():
    RNG = np.random.default_rng(0)  # per test: order-independent
    lab = np.array([0] * 20 + [1] * 20)
    mixed = RNG.normal(size=(40, 5))
    split = mixed + np.where(lab[:, None] == 1, 5.0, -5.0) * np.eye(5)[0]
    s = P.silhouette_per_layer(np.stack([mixed, split]), lab)
    assert s[0] < 0.1 and s[1] > 0.5
    assert s[1] == pytest.approx(silhouette_score(split, lab, metric="cosine"))
    assert np.isnan(P.silhouette_per_layer(np.stack([mixed]), np.zeros(40))).all()


def test_silhouette_samples_large_inputs_deterministically():
    RNG = np.random.default_rng(0)  # per test: order-independent
    x = RNG.normal(size=(2, 300, 4))
    lab = RNG.integers(0, 2, 300)
    a = P.silhouette_per_layer(x, lab, max_units=100)
    np.testing.assert_array_equal(a, P.silhouette_per_layer(x, lab, max_units=100))


def test_neighbour_agreement_matches_leave_one_out_knn():
    RNG = np.random.default_rng(0)  # per test: order-independent
    from sklearn.neighbors import KNeighborsClassifier

    x = RNG.normal(size=(1, 60, 4))
    lab = (x[0, :, 0] > 0).astype(int)
    got, chance = P.neighbour_agreement_per_layer(x, lab, k=5)
    want = []
    for i in range(60):  # hand-rolled leave-one-out with sklearn's neighbour search
        keep = np.arange(60) != i
        knn = KNeighborsClassifier(5, metric="cosine").fit(x[0][keep], lab[keep])
        nb = knn.kneighbors(x[0][i : i + 1], return_distance=False)[0]
        want.append((lab[keep][nb] == lab[i]).mean())
    assert got[0] == pytest.approx(np.mean(want))
    shares = np.bincount(lab) / 60
    assert chance == pytest.approx((shares**2).sum())


@pytest.mark.parametrize(
    "bad,layers,msg",
    [
        (np.zeros((2, 2, 3)), [0, 1], "at least 3 units"),
        (np.zeros((5, 3)), [0], "n_layers, n_units, d_model"),
        (np.zeros((2, 5, 3)), [0], "2 layers"),
        (np.full((1, 5, 3), np.nan), [0], "NaN"),
    ],
)
def test_bad_inputs_say_what_is_wrong(bad, layers, msg):
    with pytest.raises(ValueError, match=msg):
        P.project(bad, layers, "pca")


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        P.project(np.zeros((1, 5, 3)), [0], "tsne")


def test_wide_pca_gram_route_matches_sklearn():
    """Fewer units than dimensions goes through the Gram matrix."""
    RNG = np.random.default_rng(0)  # per test: order-independent
    x = (RNG.normal(size=(2, 15, 64)) * np.linspace(3, 1, 64)).astype(np.float32)
    proj = P.project(x, [0, 1], "pca", dims=3)
    ref = PCA(3, svd_solver="full").fit(x.reshape(-1, 64).astype(np.float64))
    _match_up_to_sign(proj.coords.reshape(-1, 3), ref.transform(x.reshape(-1, 64)), 1e-3)
    np.testing.assert_allclose(proj.explained_variance, ref.explained_variance_ratio_, rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_standardize_in_place_gives_the_same_bits(dtype):
    """The standardisation divides its one centred array in place: bit for bit the formula
    ((x - mean) / sd) cast to float32, a constant (sd 0) layer included."""
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(3, 50, 16)) * rng.uniform(0.1, 50, size=(3, 1, 16))).astype(dtype)
    x[1] = 2.0
    mu, sd = x.mean(axis=1, keepdims=True), x.std(axis=(1, 2), keepdims=True)
    want = ((x - mu) / np.where(sd > 0, sd, 1)).astype(np.float32)
    got = P._standardize(x)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
