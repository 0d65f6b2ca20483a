"""Representational similarity: linear CKA (biased and debiased) and cosine matrices.

Linear CKA (Kornblith et al. 2019) of X (n, p) and Y (n, q) describing the same n units:
    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),   K = X X^T, L = Y Y^T
which, with column-centred X and Y, is  ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F).
The debiased variant replaces HSIC by the unbiased estimator of Song et al. (2012), as used
by Nguyen et al. (2021); it is less inflated when units are few compared with dimensions.

Every layer x layer matrix here is built from one quantity, P[i, j] = ||A_i^T B_j||_F^2
= <K_i, L_j>_F over centred layers, computed once for all pairs:
  - Gram form (units < dims): chunked blocks of the n x n Grams, never all of them in memory;
  - feature form (units >= dims): X_i^T Z with all layers of the other stack side by side.
Debiased CKA then needs only the squared row norms of each centred layer (see ``_finish``).
Products run in the inputs' precision (float32 for stored activations, float64 if given)
and every sum of squares accumulates in float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CKA_KINDS = ("layer-cka", "layer-cka-debiased", "model-cka", "model-cka-debiased")
_BLOCK_VALUES = 32_000_000  # Gram rows held at once by the Gram route (128 MB in float32)


@dataclass(frozen=True)
class SimilarityMatrix:
    """A similarity heatmap: values, what the rows/columns are, and its fixed colour range."""

    values: np.ndarray  #: (n_rows, n_cols); NaN where undefined (e.g. a constant layer)
    rows: tuple  #: axis labels of the rows (layers, tokens, prompts, runs)
    cols: tuple  #: axis labels of the columns
    kind: str  #: layer-cka[-debiased] | layer-cosine | token | prompt | model-cka[-debiased] | run
    vmin: float  #: fixed colour range: -1 for cosine, 0 for CKA
    vmax: float
    order: tuple[int, ...] | None = None  #: display order of a square matrix's rows and cols
    row_labels: tuple | None = None  #: a class label per row (colour strip), in data order
    note: str = ""  #: a sentence about undefined cells, shown under the figure

    def __post_init__(self):
        if self.values.shape != (len(self.rows), len(self.cols)):
            raise ValueError("values must be (len(rows), len(cols))")
        if not self.vmin < self.vmax:
            raise ValueError("the colour range needs vmin < vmax")
        if self.order is not None and sorted(self.order) != list(range(len(self.rows))):
            raise ValueError("order must be a permutation of the rows")
        if self.row_labels is not None and len(self.row_labels) != len(self.rows):
            raise ValueError("row_labels needs one label per row")

    @property
    def measure(self) -> str:
        return "CKA" if "cka" in self.kind else "cosine"


# -- CKA -------------------------------------------------------------------------------------
def _as_stack(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3:
        raise ValueError(f"{name} must be (n_layers, n_units, d_model); got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _work_dtype(*arrays: np.ndarray) -> type:
    """float64 if any input is float64, else float32 (stored activations are float32)."""
    return np.float64 if any(x.dtype == np.float64 for x in arrays) else np.float32


def _center(a: np.ndarray, dtype) -> np.ndarray:
    """Column-centre every layer: (n_layers, n_units, d) -> same shape, ``dtype``."""
    return (a - a.mean(axis=1, keepdims=True, dtype=np.float64)).astype(dtype, copy=False)


def _cross_feature(a: np.ndarray, b: np.ndarray, same: bool) -> np.ndarray:
    """P[i, j] = ||a_i^T b_j||_F^2 via d x d products. a (La, n, da), b (Lb, n, db)."""
    n_b, n, d_b = b.shape
    zb = np.ascontiguousarray(b.transpose(1, 0, 2).reshape(n, n_b * d_b))
    out = np.zeros((len(a), n_b))
    for i, x in enumerate(a):
        j0 = i if same else 0
        m = x.T @ zb[:, j0 * d_b :]  # (da, (Lb - j0) * db)
        out[i, j0:] = np.square(m, dtype=np.float64).reshape(len(x.T), -1, d_b).sum(axis=(0, 2))
    return np.triu(out) + np.triu(out, 1).T if same else out


def _gram_rows(s: np.ndarray, r0: int, r1: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows r0:r1 of every layer's Gram, columns r0: -> (diagonal block, right of it), flat."""
    k = np.stack([x[r0:r1] @ x[r0:].T for x in s])  # (L, r1 - r0, n - r0)
    return k[:, :, : r1 - r0].reshape(len(s), -1), k[:, :, r1 - r0 :].reshape(len(s), -1)


def _cross_gram(a: np.ndarray, b: np.ndarray, same: bool) -> np.ndarray:
    """P[i, j] = <K_i, L_j>_F from row blocks of the Grams (upper block triangle only)."""
    n = a.shape[1]
    block = int(np.clip(_BLOCK_VALUES // ((len(a) + (0 if same else len(b))) * n), 16, n))
    out = np.zeros((len(a), len(b)))
    for r0 in range(0, n, block):
        r1 = min(r0 + block, n)
        ka_d, ka_o = _gram_rows(a, r0, r1)
        kb_d, kb_o = (ka_d, ka_o) if same else _gram_rows(b, r0, r1)
        out += (ka_d @ kb_d.T).astype(np.float64) + 2.0 * (ka_o @ kb_o.T).astype(np.float64)
    return out


def _cost(la: int, da: int, lb: int, db: int, n: int, same: bool) -> tuple[float, float]:
    """Estimated work of the Gram and the feature route (guides the automatic choice).

    Multiply-adds, with the Gram route's <K_i, L_j> products weighted x8: they stream n^2
    values per pair from memory instead of computing."""
    half = 0.5 if same else 1.0
    grams = n * n / 2 * (la * da + (0 if same else lb * db))
    gram = grams + 8 * n * n / 2 * la * lb * half
    return gram, float(n) * la * da * lb * db * half


def _hsic_u(p: np.ndarray, dd: np.ndarray, ss: np.ndarray, n: int) -> np.ndarray:
    """Unbiased HSIC (Song et al. 2012) of centred linear Grams (K 1 = 0), elementwise.

    With K~ = K - diag(K) and d_K = diag(K):  tr(K~ L~) = P - d_K.d_L,  1'K~1 = -sum(d_K),
    1'K~L~1 = d_K.d_L, so
      HSIC_u = [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3))
    needs only P = <K, L>, dd = d_K.d_L and ss = sum(d_K) sum(d_L).
    """
    return (p - dd + ss / ((n - 1) * (n - 2)) - 2 * dd / (n - 2)) / (n * (n - 3))


def _finish(
    p: np.ndarray, pa: np.ndarray, pb: np.ndarray, da: np.ndarray, db: np.ndarray, debiased: bool
) -> np.ndarray:
    """CKA from cross products P (La, Lb), self products pa/pb and squared row norms da/db."""
    if debiased:
        n = da.shape[1]
        num = _hsic_u(p, da @ db.T, np.outer(da.sum(1), db.sum(1)), n)
        pa = _hsic_u(pa, (da * da).sum(1), da.sum(1) ** 2, n)
        pb = _hsic_u(pb, (db * db).sum(1), db.sum(1) ** 2, n)
    else:
        num = p
    norms = np.outer(pa, pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, num / np.sqrt(np.where(norms > 0, norms, 1)), np.nan)


def cka_matrix(
    a: np.ndarray, b: np.ndarray | None = None, debiased: bool = False, method: str = "auto"
) -> np.ndarray:
    """Layer x layer linear CKA. a: (La, n_units, da); b: (Lb, n_units, db), default a.

    Returns (La, Lb) float64, NaN where a layer has no variance across units (CKA undefined).
    ``method``: 'gram', 'feature' or 'auto' (the cheaper one for these shapes).
    """
    a = _as_stack(a, "a")
    same = b is None
    b = a if same else _as_stack(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"Both stacks must describe the same units; got {a.shape[1]} and {b.shape[1]} units."
        )
    n = a.shape[1]
    if n < (4 if debiased else 2):
        raise ValueError(
            f"{'Debiased' if debiased else 'Linear'} CKA needs at least "
            f"{4 if debiased else 2} units; got {n}."
        )
    dtype = _work_dtype(a, b)
    ac = _center(a, dtype)
    bc = ac if same else _center(b, dtype)
    if method == "auto":
        g, f = _cost(len(a), a.shape[2], len(b), b.shape[2], n, same)
        method = "gram" if g < f else "feature"
    if method not in ("gram", "feature"):
        raise ValueError("method must be 'auto', 'gram' or 'feature'")
    cross = _cross_gram if method == "gram" else _cross_feature
    p = cross(ac, bc, same)
    da = np.einsum("lud,lud->lu", ac, ac, dtype=np.float64)
    db = da if same else np.einsum("lud,lud->lu", bc, bc, dtype=np.float64)
    pa = np.diag(p) if same else np.array([_self_product(x) for x in ac])
    pb = pa if same else np.array([_self_product(x) for x in bc])
    return _finish(p, pa, pb, da, db, debiased)


def _self_product(x: np.ndarray) -> float:
    """||x^T x||_F^2 = ||x x^T||_F^2 for a centred (n, d) layer, by the smaller product."""
    g = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T
    return float(np.square(g, dtype=np.float64).sum())


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """CKA between two representations of the same n units: x (n, p), y (n, q)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError("x and y must be 2-D arrays (n_units, dims)")
    return float(cka_matrix(x[None].astype(np.float64), y[None].astype(np.float64), debiased)[0, 0])


def _undefined_note(values: np.ndarray, rows: Sequence, cols: Sequence) -> str:
    bad_r = [str(r) for r, v in zip(rows, values) if np.isnan(v).all()]
    bad_c = [str(c) for c, v in zip(cols, values.T) if np.isnan(v).all()]
    if not bad_r and not bad_c:
        return ""
    where = ", ".join(dict.fromkeys(bad_r + bad_c))
    return (
        f"CKA is undefined at layer {where}: every unit has the same vector there "
        "(for example, every prompt ends with the same token); those cells are blank."
    )


def layer_cka(stack: np.ndarray, layers: Sequence[int], debiased: bool = False) -> SimilarityMatrix:
    """Layer x layer CKA of one model. stack: (n_layers_sel, n_units, d_model)."""
    v = cka_matrix(stack, debiased=debiased)
    kind = "layer-cka-debiased" if debiased else "layer-cka"
    return SimilarityMatrix(
        v, tuple(layers), tuple(layers), kind, 0.0, 1.0, note=_undefined_note(v, layers, layers)
    )


def model_cka(
    stack_a: np.ndarray,
    stack_b: np.ndarray,
    layers_a: Sequence[int],
    layers_b: Sequence[int],
    debiased: bool = False,
) -> SimilarityMatrix:
    """Layer of model A (rows) x layer of model B (cols); the stacks hold the same units."""
    v = cka_matrix(stack_a, stack_b, debiased=debiased)
    kind = "model-cka-debiased" if debiased else "model-cka"
    return SimilarityMatrix(
        v,
        tuple(layers_a),
        tuple(layers_b),
        kind,
        0.0,
        1.0,
        note=_undefined_note(v, layers_a, layers_b),
    )


# -- cosine ----------------------------------------------------------------------------------
def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    dtype = _work_dtype(x)
    norm = np.linalg.norm(x, axis=-1, keepdims=True).astype(dtype)
    return x.astype(dtype, copy=False) / np.where(norm > 0, norm, 1)


def cosine_matrix(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Row-wise cosine similarities: (n, d) x (m, d) -> (n, m); a zero row gives 0."""
    xu = _unit_rows(x)
    out = xu @ (xu if y is None else _unit_rows(y)).T
    return np.clip(out, -1, 1, out=out)


def layer_cosine(stack: np.ndarray) -> np.ndarray:
    """Mean cosine between the same unit at layers i and j. (L, n_units, d) -> (L, L).

    A unit whose vector is zero at a layer counts as cosine 0 there."""
    stack = _as_stack(stack, "stack")
    u = _unit_rows(stack).reshape(len(stack), -1)
    return np.clip(u @ u.T / stack.shape[1], -1, 1).astype(np.float64)


def layer_cosine_matrix(stack: np.ndarray, layers: Sequence[int]) -> SimilarityMatrix:
    """Layer x layer mean cosine of the same units, as a heatmap."""
    return SimilarityMatrix(
        layer_cosine(stack), tuple(layers), tuple(layers), "layer-cosine", -1.0, 1.0
    )


def pairwise_cosine(
    x: np.ndarray,
    names: Sequence[str],
    kind: str,
    labels: Sequence | None = None,
    order: str = "none",
    center: bool = False,
) -> SimilarityMatrix:
    """Unit x unit cosine at one layer (kind: 'token', 'prompt', 'run', ...).

    x: (n_units, d_model); names: one axis label per unit; labels: optional class per unit
    (colour strip); order: 'none' (as given), 'label' (by label, stable) or 'cluster'
    (dendrogram leaf order of average linkage on 1 - cosine); center: subtract the units'
    mean vector first, which removes the direction all of them share (anisotropy).
    """
    x = np.asarray(x)
    if x.ndim != 2 or len(x) != len(names):
        raise ValueError("x must be (n_units, d_model) with one name per unit")
    if center:
        x = x - x.mean(axis=0, keepdims=True, dtype=np.float64)
    v = cosine_matrix(x)
    if order == "cluster":
        ordering = cluster_order(v)
    elif order == "label":
        if labels is None:
            raise ValueError("Ordering by label needs labels; this set has none.")
        ordering = label_order(labels)
    elif order == "none":
        ordering = None
    else:
        raise ValueError("order must be 'none', 'label' or 'cluster'")
    note = "Centred: the mean vector of these units was subtracted first." if center else ""
    lab = None if labels is None else tuple(labels)
    return SimilarityMatrix(v, tuple(names), tuple(names), kind, -1.0, 1.0, ordering, lab, note)


# -- ordering ----------------------------------------------------------------------------------
def cluster_order(sim: np.ndarray) -> tuple[int, ...]:
    """Leaf order of average-linkage clustering on 1 - similarity (scipy's dendrogram order)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError("clustering needs a square similarity matrix")
    if len(sim) < 3:
        return tuple(range(len(sim)))
    dist = np.clip(1 - sim, 0, None)
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0)
    z = linkage(squareform(dist, checks=False), "average")
    return tuple(int(i) for i in leaves_list(z))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def label_order(labels: Sequence) -> tuple[int, ...]:
    """Indices sorted by label (as text; missing labels last), ties kept in their order."""
    keys = ["\uffff" if _missing(lab) else str(lab) for lab in labels]
    return tuple(int(i) for i in np.argsort(np.asarray(keys, dtype=str), kind="stable"))


# -- unit alignment ------------------------------------------------------------------------
def require_same_units(
    index_a: Sequence,
    index_b: Sequence,
    sides: tuple[str, str] = ("the first side", "the second side"),
) -> None:
    """Two unit indexes must list the same units in the same order, else ValueError.

    Each index is a sequence of tuples identifying a unit, e.g. (prompt_id, pos) or
    (prompt_id, 'last'). Runs of two models have different run ids, so align by prompt.
    """
    a, b = [tuple(u) for u in index_a], [tuple(u) for u in index_b]
    if a == b:
        return
    common = len(set(a) & set(b))
    first = next((i for i, (u, v) in enumerate(zip(a, b)) if u != v), min(len(a), len(b)))

    def show(s, i) -> str:
        return str(s[i]) if i < len(s) else "nothing"

    raise ValueError(
        f"The two selections do not share their units: {sides[0]} has {len(a)} and "
        f"{sides[1]} has {len(b)} ({common} in common); unit {first} is {show(a, first)} on "
        f"one side and {show(b, first)} on the other. Compare the same prompts, tokenized the "
        "same way, on both sides."
    )
