"""Representational similarity: linear CKA (and its debiased variant), cosine matrices.

Linear CKA (Kornblith et al. 2019) for X (n, p), Y (n, q), column-centred:
    CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)
computed in the Gram form <K, L> / (||K|| ||L||) with K = X X^T when n < dims.
Debiased CKA uses the unbiased HSIC estimator (Song et al. 2012) on the Gram matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SimilarityMatrix:
    values: np.ndarray  #: (n_rows, n_cols)
    rows: tuple  #: axis labels
    cols: tuple
    kind: str  #: layer-cka | layer-cka-debiased | layer-cosine | token | prompt | model-cka | run
    vmin: float  #: fixed colour range: -1 for cosine, 0 for CKA
    vmax: float
    order: tuple[int, ...] | None = None  #: display order of rows/cols (clustering or label)

    def __post_init__(self):
        if self.values.shape != (len(self.rows), len(self.cols)):
            raise ValueError("values must be (len(rows), len(cols))")


def _center(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x - x.mean(0, keepdims=True)


def _gram(x: np.ndarray) -> np.ndarray:
    xc = _center(x)
    return xc @ xc.T


def _hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012), diagonals of the Gram matrices zeroed."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    kl = k @ l
    return float((np.trace(kl) + k.sum() * l.sum() / ((n - 1) * (n - 2))
                  - 2 * kl.sum() / (n - 2)) / (n * (n - 3)))


def linear_cka(x: np.ndarray, y: np.ndarray, debiased: bool = False) -> float:
    """CKA between two representations of the same n units (rows aligned)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError("x and y must describe the same units (same number of rows)")
    if debiased:
        if x.shape[0] < 4:
            raise ValueError("debiased CKA needs at least 4 units")
        k, l = _gram(x), _gram(y)
        denom = np.sqrt(_hsic_unbiased(k, k) * _hsic_unbiased(l, l))
        return _hsic_unbiased(k, l) / denom if denom > 0 else 0.0
    xc, yc = _center(x), _center(y)
    if xc.shape[0] < max(xc.shape[1], yc.shape[1]):
        k, l = xc @ xc.T, yc @ yc.T
        num, den = (k * l).sum(), np.linalg.norm(k) * np.linalg.norm(l)
    else:
        num = np.linalg.norm(yc.T @ xc) ** 2
        den = np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    return float(num / den) if den > 0 else 0.0


def cka_matrix(a: np.ndarray, b: np.ndarray | None = None, debiased: bool = False
               ) -> np.ndarray:
    """Layer x layer CKA. a: (n_layers_a, n_units, d_a); b defaults to a (same units)."""
    same = b is None
    b = a if same else b
    if a.shape[1] != b.shape[1]:
        raise ValueError("both stacks must hold the same units")
    grams_a = [_gram(x) for x in a]
    grams_b = grams_a if same else [_gram(x) for x in b]
    if debiased:
        na = [_hsic_unbiased(k, k) for k in grams_a]
        nb = na if same else [_hsic_unbiased(k, k) for k in grams_b]
        f = _hsic_unbiased
    else:
        na = [np.linalg.norm(k) for k in grams_a]
        nb = na if same else [np.linalg.norm(k) for k in grams_b]

        def f(k, l):
            return float((k * l).sum())
    out = np.empty((len(a), len(b)))
    for i, k in enumerate(grams_a):
        for j, l in enumerate(grams_b):
            if same and j < i:
                out[i, j] = out[j, i]
                continue
            den = np.sqrt(na[i] * nb[j]) if debiased else na[i] * nb[j]
            out[i, j] = f(k, l) / den if den > 0 else 0.0
    return out


def cosine_matrix(x: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Row-wise cosine similarities (n, d) x (m, d) -> (n, m); zero rows give 0."""
    def unit(v):
        v = np.asarray(v, dtype=np.float64)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        return v / np.where(n > 0, n, 1)
    xu = unit(x)
    return np.clip(xu @ (xu if y is None else unit(y)).T, -1, 1)


def layer_cosine(a: np.ndarray) -> np.ndarray:
    """Mean cosine between the same unit at layers i and j. a: (n_layers, n_units, d)."""
    n = np.linalg.norm(a, axis=2, keepdims=True)
    u = a / np.where(n > 0, n, 1)
    return np.einsum("iud,jud->ij", u, u) / a.shape[1]


def cluster_order(sim: np.ndarray) -> tuple[int, ...]:
    """Leaf order of average-linkage clustering on 1 - similarity (scipy dendrogram order)."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = np.clip(1 - sim, 0, None)
    dist = (dist + dist.T) / 2
    np.fill_diagonal(dist, 0)
    if len(sim) < 3:
        return tuple(range(len(sim)))
    return tuple(int(i) for i in leaves_list(linkage(squareform(dist, checks=False), "average")))


def label_order(labels) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(np.asarray(labels, dtype=str), kind="stable"))


def require_same_units(index_a, index_b) -> None:
    """Two unit indexes (sequences of (prompt_id or text, pos)) must match, in order."""
    a, b = list(map(tuple, index_a)), list(map(tuple, index_b))
    if a != b:
        raise ValueError(
            f"The two selections do not share their units ({len(a)} vs {len(b)} units, "
            f"{len(set(a) & set(b))} in common); compare the same prompt set on both sides."
        )
