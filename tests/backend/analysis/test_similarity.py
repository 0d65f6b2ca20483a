"""CKA and cosine matrices against independent references written from the published formulas."""

import numpy as np
import pytest
from scipy.cluster.hierarchy import leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics.pairwise import cosine_similarity

from backend.analysis import similarity as S


def rng(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


def cka_reference(x, y):
    """Kornblith et al. (2019): HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), H = I - 11'/n."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def debiased_reference(x, y):
    """Unbiased HSIC of Song et al. (2012), term by term, on the raw (uncentred) Grams."""
    x, y = np.asarray(x, float), np.asarray(y, float)

    def hsic_u(k, l):
        n = len(k)
        k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
        ones = np.ones(n)
        return (
            np.trace(k @ l)
            + (ones @ k @ ones) * (ones @ l @ ones) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * ones @ k @ l @ ones
        ) / (n * (n - 3))

    k, l = x @ x.T, y @ y.T
    return hsic_u(k, l) / np.sqrt(hsic_u(k, k) * hsic_u(l, l))


def related_pair(n, d, q=7, seed=1):
    g = rng(seed)
    x = g.normal(size=(n, d)).astype(np.float32)
    y = (x @ g.normal(size=(d, q)) + g.normal(size=(n, q)) + 3.0).astype(np.float32)
    return x, y


@pytest.mark.parametrize("n,d", [(30, 50), (80, 10)])  # fewer units than dims, and more
@pytest.mark.parametrize("debiased", [False, True])
def test_pairwise_cka_matches_the_formula_in_fp32(n, d, debiased):
    x, y = related_pair(n, d)
    ref = (debiased_reference if debiased else cka_reference)(x, y)
    assert S.linear_cka(x, y, debiased) == pytest.approx(ref, abs=1e-5)
    assert S.linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("method", ["gram", "feature", "auto"])
@pytest.mark.parametrize("debiased", [False, True])
def test_matrix_routes_match_the_formula(method, debiased, monkeypatch):
    """Both routes on float32 input (float32 products), in several uneven Gram blocks."""
    monkeypatch.setattr(S, "_BLOCK_VALUES", 4 * 37 * 10)  # 10-row blocks of 37 units
    g = rng(2)
    a = g.normal(size=(3, 37, 20)).astype(np.float32)
    a[1] += a[0]
    b = g.normal(size=(4, 37, 45)).astype(np.float32) + 1
    b[2, :, :20] += 2 * a[2]
    ref = debiased_reference if debiased else cka_reference
    want = np.array([[ref(x, y) for y in b] for x in a])
    np.testing.assert_allclose(S.cka_matrix(a, b, debiased, method), want, atol=1e-5)
    want_self = np.array([[ref(x, y) for y in a] for x in a])
    got = S.cka_matrix(a, debiased=debiased, method=method)
    np.testing.assert_allclose(got, want_self, atol=1e-5)
    np.testing.assert_allclose(got, got.T, atol=1e-12)


def test_invariant_to_rotation_scaling_and_shift_but_not_to_any_linear_map():
    g = rng(3)
    x = g.normal(size=(40, 8))
    y = g.normal(size=(40, 6)) + x[:, :6]
    q, _ = np.linalg.qr(g.normal(size=(8, 8)))
    base = S.linear_cka(x, y)
    assert S.linear_cka(x @ q, y) == pytest.approx(base, abs=1e-9)
    assert S.linear_cka(3.7 * x, 0.2 * y) == pytest.approx(base, abs=1e-9)
    assert S.linear_cka(x + 5.0, y) == pytest.approx(base, abs=1e-9)
    skew = np.diag([10, 1, 1, 1, 1, 1, 1, 0.1]) @ q  # invertible, not orthogonal
    assert abs(S.linear_cka(x @ skew, y) - base) > 1e-3
    # the debiased estimator has the same invariances
    deb = S.linear_cka(x, y, debiased=True)
    assert S.linear_cka(2 * x @ q + 1, y, debiased=True) == pytest.approx(deb, abs=1e-9)


def test_debiased_is_less_inflated_with_few_units():
    g = rng(4)
    x, y = g.normal(size=(40, 1000)), g.normal(size=(40, 1000))  # independent
    assert S.linear_cka(x, y) > 0.9  # the biased estimate is inflated
    assert abs(S.linear_cka(x, y, debiased=True)) < 0.1


def test_layer_cka_dataclass_and_undefined_layer():
    g = rng(5)
    stack = g.normal(size=(3, 30, 6))
    stack[0] = 1.0  # every unit identical: no variance, CKA undefined
    m = S.layer_cka(stack, [0, 1, 2])
    assert m.kind == "layer-cka" and (m.vmin, m.vmax) == (0.0, 1.0) and m.measure == "CKA"
    assert np.isnan(m.values[0]).all() and np.isnan(m.values[:, 0]).all()
    assert m.values[1, 1] == pytest.approx(1.0)
    assert "undefined at layer 0" in m.note
    mm = S.model_cka(stack[1:], g.normal(size=(2, 30, 9)), [1, 2], [0, 1], debiased=True)
    assert mm.kind == "model-cka-debiased" and mm.values.shape == (2, 2) and not mm.note


@pytest.mark.parametrize(
    "bad,msg",
    [
        ((np.zeros((2, 5, 3)), np.zeros((2, 6, 3))), "same units"),
        ((np.zeros((5, 3)), None), "n_layers, n_units, d_model"),
        ((np.full((1, 5, 3), np.nan), None), "NaN"),
        ((np.zeros((1, 1, 3)), None), "at least 2 units"),
    ],
)
def test_cka_matrix_rejects_bad_input_with_a_sentence(bad, msg):
    with pytest.raises(ValueError, match=msg):
        S.cka_matrix(*bad)


def test_cosine_matrices_by_hand_and_against_sklearn():
    x = np.array([[1.0, 0], [0, 2], [-3, 0]])
    np.testing.assert_allclose(S.cosine_matrix(x), [[1, 0, -1], [0, 1, 0], [-1, 0, 1]])
    a = np.stack([x, np.array([[1.0, 1], [0, 1], [3, 0]])])
    lc = S.layer_cosine(a)
    assert lc[0, 1] == pytest.approx((np.sqrt(0.5) + 1 - 1) / 3)
    m = S.layer_cosine_matrix(a, [0, 1])
    assert (m.vmin, m.vmax, m.measure) == (-1.0, 1.0, "cosine")
    pts = rng(6).normal(size=(50, 16)).astype(np.float32)
    np.testing.assert_allclose(S.cosine_matrix(pts), cosine_similarity(pts), atol=1e-6)
    assert S.cosine_matrix(np.zeros((2, 3)))[0, 1] == 0.0  # a zero vector: 0, not NaN


def test_cluster_order_is_scipys_dendrogram_order():
    pts = rng(7).normal(size=(12, 4))
    sim = S.cosine_matrix(pts)
    d = np.clip(1 - sim, 0, None)
    d = (d + d.T) / 2
    np.fill_diagonal(d, 0)
    want = tuple(int(i) for i in leaves_list(linkage(squareform(d), "average")))
    assert S.cluster_order(sim) == want
    m = S.pairwise_cosine(pts, [f"p{i}" for i in range(12)], "prompt", order="cluster")
    assert m.order == want


def test_label_order_is_stable_with_missing_labels_last():
    assert S.label_order(["b", "a", None, "a", "b"]) == (1, 3, 0, 4, 2)
    m = S.pairwise_cosine(
        np.eye(3), ["x", "y", "z"], "prompt", labels=["b", "a", "b"], order="label"
    )
    assert m.order == (1, 0, 2) and m.row_labels == ("b", "a", "b")
    with pytest.raises(ValueError, match="needs labels"):
        S.pairwise_cosine(np.eye(3), ["x", "y", "z"], "prompt", order="label")


def test_label_clusters_show_up_in_the_cluster_order():
    g = rng(8)
    centres = g.normal(size=(3, 32)) * 4
    labels = np.repeat([0, 1, 2], 10)
    pts = centres[labels] + g.normal(size=(30, 32))
    m = S.pairwise_cosine(
        pts, [str(i) for i in range(30)], "prompt", labels=labels, order="cluster"
    )
    ordered = labels[list(m.order)]
    assert (np.diff(ordered) != 0).sum() == 2  # three contiguous blocks


def test_run_kind_is_just_another_pairwise_cosine():
    m = S.pairwise_cosine(rng(9).normal(size=(4, 8)), ["run 0", "run 1", "run 2", "run 3"], "run")
    assert m.kind == "run" and m.order is None and m.values.shape == (4, 4)


def test_units_must_align_and_the_message_says_where():
    S.require_same_units([("a", 0), ("a", 1)], [("a", 0), ("a", 1)])
    with pytest.raises(ValueError, match="do not share their units") as e:
        S.require_same_units([("a", 0), ("a", 1)], [("a", 0), ("a", 2)], ("demo", "gpt2"))
    assert "unit 1 is ('a', 1) on one side and ('a', 2)" in str(e.value)
    assert "demo has 2 and gpt2 has 2 (1 in common)" in str(e.value)
    with pytest.raises(ValueError, match="nothing"):
        S.require_same_units([("a", 0)], [("a", 0), ("a", 1)])


def test_similarity_matrix_checks_its_invariants():
    with pytest.raises(ValueError, match="len\\(rows\\)"):
        S.SimilarityMatrix(np.zeros((2, 2)), (0,), (0, 1), "layer-cka", 0, 1)
    with pytest.raises(ValueError, match="permutation"):
        S.SimilarityMatrix(np.zeros((2, 2)), (0, 1), (0, 1), "prompt", -1, 1, (0, 0))
    with pytest.raises(ValueError, match="vmin < vmax"):
        S.SimilarityMatrix(np.zeros((1, 1)), (0,), (0,), "prompt", 1, 1)


def test_centred_cosine_removes_the_shared_direction():
    g = rng(10)
    pts = g.normal(size=(20, 8)) + 50.0  # every vector shares one big direction
    raw = S.pairwise_cosine(pts, [str(i) for i in range(20)], "prompt")
    assert raw.values.min() > 0.95 and not raw.note
    ctr = S.pairwise_cosine(pts, [str(i) for i in range(20)], "prompt", center=True)
    np.testing.assert_allclose(ctr.values, cosine_similarity(pts - pts.mean(0)), atol=1e-9)
    assert "Centred" in ctr.note


@pytest.mark.parametrize("debiased", [False, True])
def test_float32_products_stay_within_1e5_on_residual_like_data(debiased):
    """Large shared offset and one massive dimension, as in real residual streams."""
    g = rng(11)
    base = g.normal(size=(600, 96))
    a = np.stack([base + 0.5 * k * g.normal(size=(600, 96)) for k in range(3)])
    a += 100.0
    a[:, :, 7] *= 300.0
    a32 = a.astype(np.float32)
    for method in ("gram", "feature"):
        got = S.cka_matrix(a32, debiased=debiased, method=method)
        want = S.cka_matrix(a32.astype(np.float64), debiased=debiased, method=method)
        np.testing.assert_allclose(got, want, atol=1e-5)
