import numpy as np
import pytest
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform

from backend.analysis import similarity as S

RNG = np.random.default_rng(1)


def cka_reference(x, y):
    """Kornblith et al. (2019), eq. HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with H = I - 11/n."""
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def debiased_reference(x, y):
    """Unbiased HSIC of Song et al. (2012), written out term by term."""
    def u(k, l):
        n = len(k)
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        ones = np.ones(n)
        return (np.trace(k @ l) + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
                - 2 / (n - 2) * ones @ k @ l @ ones) / (n * (n - 3))
    xc, yc = x - x.mean(0), y - y.mean(0)
    k, l = xc @ xc.T, yc @ yc.T
    return u(k, l) / np.sqrt(u(k, k) * u(l, l))


@pytest.mark.parametrize("n,d", [(30, 50), (80, 10)])  # Gram route and feature route
def test_linear_cka_matches_the_formula(n, d):
    x = RNG.normal(size=(n, d)).astype(np.float32)
    y = (x @ RNG.normal(size=(d, 7)) + RNG.normal(size=(n, 7))).astype(np.float32)
    assert S.linear_cka(x, y) == pytest.approx(cka_reference(x.astype(float), y.astype(float)),
                                               abs=1e-5)
    assert S.linear_cka(x, x) == pytest.approx(1.0, abs=1e-6)


def test_cka_invariances():
    x = RNG.normal(size=(40, 8))
    y = RNG.normal(size=(40, 6)) + x[:, :6]
    q, _ = np.linalg.qr(RNG.normal(size=(8, 8)))
    base = S.linear_cka(x, y)
    assert S.linear_cka(x @ q, y) == pytest.approx(base, abs=1e-9)
    assert S.linear_cka(3.7 * x, y) == pytest.approx(base, abs=1e-9)
    skew = np.diag([10, 1, 1, 1, 1, 1, 1, 0.1]) @ q
    assert abs(S.linear_cka(x @ skew, y) - base) > 1e-3


def test_debiased_cka_matches_its_definition():
    x, y = RNG.normal(size=(25, 6)), RNG.normal(size=(25, 4))
    assert S.linear_cka(x, y, debiased=True) == pytest.approx(debiased_reference(x, y), abs=1e-9)


def test_cka_matrix_consistent_with_pairwise():
    a = RNG.normal(size=(4, 30, 12))
    b = RNG.normal(size=(3, 30, 5))
    m = S.cka_matrix(a)
    assert m.shape == (4, 4) and np.allclose(np.diag(m), 1) and np.allclose(m, m.T)
    mb = S.cka_matrix(a, b, debiased=True)
    assert mb[2, 1] == pytest.approx(S.linear_cka(a[2], b[1], debiased=True), abs=1e-9)


def test_cosine_and_layer_cosine_by_hand():
    x = np.array([[1.0, 0], [0, 2], [-3, 0]])
    np.testing.assert_allclose(S.cosine_matrix(x), [[1, 0, -1], [0, 1, 0], [-1, 0, 1]])
    a = np.stack([x, np.array([[1.0, 1], [0, 1], [3, 0]])])
    lc = S.layer_cosine(a)
    assert lc[0, 1] == pytest.approx((np.sqrt(0.5) + 1 - 1) / 3)


def test_cluster_order_matches_scipy():
    pts = RNG.normal(size=(12, 4))
    sim = S.cosine_matrix(pts)
    d = np.clip(1 - sim, 0, None)
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0)
    assert S.cluster_order(sim) == tuple(leaves_list(linkage(squareform(d), "average")))


def test_units_must_align():
    S.require_same_units([("a", 0), ("a", 1)], [("a", 0), ("a", 1)])
    with pytest.raises(ValueError, match="do not share their units"):
        S.require_same_units([("a", 0)], [("b", 0)])
