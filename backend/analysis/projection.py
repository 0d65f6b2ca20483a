"""Projections of units across layers into one 2-D/3-D space (pure; numpy in, dataclass out).

Methods:
- ``pca``: one PCA fitted on all chosen layers together, so every layer lives in the same
  axes (optionally each layer standardised first, since norms grow with depth).
- ``umap``: umap-learn on a PCA-50 reduction of all layers together (seeded).
- ``aligned``: a PCA per layer, each rotated onto the previous one by orthogonal Procrustes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DESCRIPTIONS = {
    "pca": "PCA over all layers at once: preserves global distances and directions of largest "
           "variance; flattens everything else, so separate clusters can overlap.",
    "umap": "UMAP (on PCA-50): preserves who is near whom; distances between clusters and "
            "cluster sizes are not meaningful.",
    "aligned": "Per-layer PCA, each rotated to match the previous layer (Procrustes): shows "
               "each layer's own main axes; positions are comparable only between neighbours.",
}


@dataclass(frozen=True)
class Projection:
    coords: np.ndarray  #: (n_layers_sel, n_units, k)
    layers: tuple[int, ...]  #: layer index of each row of ``coords``
    method: str
    explained_variance: np.ndarray | None  #: (k,) ratio for pca; (n_layers, k) for aligned
    description: str

    def __post_init__(self):
        if self.coords.ndim != 3 or self.coords.shape[0] != len(self.layers):
            raise ValueError("coords must be (n_layers, n_units, k) with one row per layer")


def _standardize(x: np.ndarray) -> np.ndarray:
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=(1, 2), keepdims=True)
    return (x - mu) / np.where(sd > 0, sd, 1)


def pca_fit(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, d) -> (scores (n, k), components (k, d), explained variance ratio (k,)).
    Deterministic sign: the largest |loading| of each component is positive."""
    xc = x - x.mean(0)
    if xc.shape[0] < xc.shape[1]:  # Gram route when units < dims
        u, s, vt = np.linalg.svd(xc, full_matrices=False)
    else:
        u, s, vt = np.linalg.svd(xc, full_matrices=False)
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(1)])
    signs[signs == 0] = 1
    vt = vt * signs[:, None]
    var = s**2
    ratio = var / var.sum() if var.sum() > 0 else np.zeros_like(var)
    return xc @ vt[:k].T, vt[:k], ratio[:k]


def procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Orthogonal R minimising ||a R - b||_F (a, b: (n, k))."""
    u, _, vt = np.linalg.svd(a.T @ b)
    return u @ vt


def project(x: np.ndarray, layers: list[int] | tuple[int, ...], method: str = "pca",
            dims: int = 2, standardize: bool = False, seed: int = 0,
            n_neighbors: int = 15) -> Projection:
    """x: float (n_layers_sel, n_units, d_model) -> Projection with (n_layers_sel, n_units, dims)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError("expected an array (n_layers, n_units, d_model)")
    n_l, n_u, d = x.shape
    if n_u < 3:
        raise ValueError(f"need at least 3 units to project, got {n_u}")
    if dims not in (2, 3):
        raise ValueError("dims must be 2 or 3")
    if method not in DESCRIPTIONS:
        raise ValueError(f"unknown method '{method}': use pca, umap or aligned")
    if standardize:
        x = _standardize(x)
    flat = x.reshape(n_l * n_u, d).astype(np.float64)
    ev = None
    if method == "pca":
        scores, _, ev = pca_fit(flat, dims)
        coords = scores.reshape(n_l, n_u, dims)
    elif method == "umap":
        import umap

        pre, _, _ = pca_fit(flat, min(50, d, flat.shape[0] - 1))
        reducer = umap.UMAP(n_components=dims, n_neighbors=min(n_neighbors, len(pre) - 1),
                            random_state=seed, init="random" if len(pre) < 10 else "spectral")
        coords = reducer.fit_transform(pre).reshape(n_l, n_u, dims)
    else:
        coords = np.empty((n_l, n_u, dims))
        ev = np.empty((n_l, dims))
        prev = None
        for i in range(n_l):
            s, _, r = pca_fit(x[i].astype(np.float64), dims)
            if prev is not None:
                s = s @ procrustes(s, prev)
            coords[i], ev[i], prev = s, r, s
    return Projection(coords.astype(np.float32), tuple(layers), method, ev, DESCRIPTIONS[method])


def silhouette_per_layer(x: np.ndarray, labels) -> np.ndarray:
    """Silhouette score (cosine) of ``labels`` at each layer of x (n_layers, n_units, d).
    NaN where fewer than two labels are present."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if len(set(labels)) < 2:
        return np.full(x.shape[0], np.nan)
    return np.array([silhouette_score(layer, labels, metric="cosine") for layer in x])


def warm_umap() -> None:
    """Import umap-learn and run a tiny fit so numba compiles once, off the request path."""
    rng = np.random.default_rng(0)
    project(rng.normal(size=(1, 60, 8)).astype(np.float32), [0], method="umap")
