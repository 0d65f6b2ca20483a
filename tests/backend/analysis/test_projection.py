import numpy as np
import pytest
from sklearn.decomposition import PCA

from backend.analysis import projection as P

RNG = np.random.default_rng(0)


def test_pca_matches_sklearn_up_to_sign():
    x = RNG.normal(size=(3, 50, 10)).astype(np.float32) * np.arange(1, 11)
    proj = P.project(x, [0, 1, 2], "pca", dims=3)
    ref = PCA(3).fit(x.reshape(-1, 10).astype(np.float64))
    got = proj.coords.reshape(-1, 3)
    want = ref.transform(x.reshape(-1, 10))
    for k in range(3):
        s = np.sign(got[:, k] @ want[:, k])
        np.testing.assert_allclose(got[:, k], s * want[:, k], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(proj.explained_variance, ref.explained_variance_ratio_, rtol=1e-4)


def test_procrustes_recovers_a_known_rotation():
    a = RNG.normal(size=(40, 3))
    q, _ = np.linalg.qr(RNG.normal(size=(3, 3)))
    np.testing.assert_allclose(P.procrustes(a @ q, a), q.T, atol=1e-8)


def test_aligned_layers_stay_close_when_the_data_barely_moves():
    base = RNG.normal(size=(60, 8)) * np.arange(8, 0, -1)
    x = np.stack([base, -base + 0.01 * RNG.normal(size=base.shape)]).astype(np.float32)
    proj = P.project(x, [0, 1], "aligned")
    assert np.abs(proj.coords[0] - proj.coords[1]).max() < 0.2


def test_umap_is_deterministic_with_a_seed():
    x = RNG.normal(size=(2, 40, 6)).astype(np.float32)
    a = P.project(x, [0, 1], "umap", seed=3).coords
    b = P.project(x, [0, 1], "umap", seed=3).coords
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 40, 2)


def test_silhouette_separates_labelled_clusters():
    lab = np.array([0] * 20 + [1] * 20)
    mixed = RNG.normal(size=(40, 5))
    split = mixed + np.where(lab[:, None] == 1, 5.0, -5.0) * np.eye(5)[0]
    s = P.silhouette_per_layer(np.stack([mixed, split]), lab)
    assert s[0] < 0.1 < 0.5 < s[1]


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 3)), np.zeros((5, 3))])
def test_bad_shapes(bad):
    with pytest.raises(ValueError):
        P.project(bad, [0], "pca")
