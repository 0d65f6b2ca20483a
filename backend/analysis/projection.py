"""Projections of units across layers into one 2-D/3-D space (pure; numpy in, dataclass out).

Methods (``METHODS``):
- ``pca``: one PCA fitted on all chosen layers together, so every layer lives in the same
  axes (optionally each layer standardised first, since norms grow with depth).
- ``umap``: umap-learn on a PCA-50 reduction of all layers together (seeded).
- ``aligned``: a PCA per layer, each rotated onto the previous one by orthogonal Procrustes.
- ``aligned-umap``: umap-learn's ``AlignedUMAP`` over the layers, identity relations.

``project(..., progress=cb)`` calls ``cb(stage, fraction)`` as it goes; the callback may raise
to cancel (UMAP is interrupted between epochs).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from backend.analysis._threads import one_blas_thread

log = logging.getLogger(__name__)

METHODS = ("pca", "umap", "aligned", "aligned-umap")
DESCRIPTIONS = {
    "pca": "PCA over all layers at once: keeps global distances and the directions of largest "
    "variance in one shared space; flattens everything else, so clusters can overlap.",
    "umap": "UMAP (on PCA-50) over all layers at once: keeps who is near whom; distances "
    "between clusters and cluster sizes are not meaningful.",
    "aligned": "Per-layer PCA, each rotated onto the previous layer (Procrustes): shows each "
    "layer's own main axes; positions compare only between neighbouring layers.",
    "aligned-umap": "AlignedUMAP per layer, tied to the previous layer unit by unit: keeps "
    "neighbourhoods within a layer; distances across clusters are not meaningful.",
}
ProgressFn = Callable[[str, float], None]
_SVD_MAX_ROWS = 4096  #: up to this many rows the covariance is formed in float64 at once
_CHUNK = 16384


@dataclass(frozen=True)
class Projection:
    """Coordinates of every unit at every chosen layer in one space."""

    coords: np.ndarray  #: float32 (n_layers_sel, n_units, k), k in (2, 3)
    layers: tuple[int, ...]  #: layer index of each row of ``coords``
    method: str
    explained_variance: np.ndarray | None  #: ratio (k,) for pca; (n_layers_sel, k) for aligned
    description: str  #: one line: what the method preserves and what it distorts
    standardized: bool = False
    seed: int | None = None  #: for the UMAP methods

    def __post_init__(self):
        c = self.coords
        if c.ndim != 3 or c.shape[0] != len(self.layers) or c.shape[2] not in (2, 3):
            raise ValueError("coords must be (n_layers, n_units, 2 or 3), one row per layer")
        ev = self.explained_variance
        if ev is not None and ev.shape[-1] != c.shape[2]:
            raise ValueError("explained variance must have one value per component")

    @property
    def n_units(self) -> int:
        return self.coords.shape[1]

    @property
    def dims(self) -> int:
        return self.coords.shape[2]

    @property
    def n_points(self) -> int:
        return self.coords.shape[0] * self.coords.shape[1]


class _Stop(Exception):
    """Raised through umap-learn's progress bar when the progress callback raises."""


def _check(x, layers: Sequence[int], method: str, dims: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"expected an array (n_layers, n_units, d_model), got shape {x.shape}")
    n_l, n_u, d = x.shape
    if len(layers) != n_l:
        raise ValueError(f"got {len(layers)} layer indices for {n_l} layers of vectors")
    if n_u < 3:
        raise ValueError(f"need at least 3 units to project, got {n_u}")
    if dims not in (2, 3) or d < dims:
        raise ValueError(f"dims must be 2 or 3 and at most d_model ({d}); got {dims}")
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}': use one of {', '.join(METHODS)}")
    if not np.isfinite(x).all():
        raise ValueError("the vectors contain NaN or infinite values")
    return x


def _standardize(x: np.ndarray) -> np.ndarray:
    """Centre each layer and scale it to unit average variance per dimension."""
    mu = x.mean(axis=1, keepdims=True)
    sd = x.std(axis=(1, 2), keepdims=True)
    out = x - mu  # one new array, divided in place; no float32 copy of a float32 result
    out /= np.where(sd > 0, sd, 1)
    return out.astype(np.float32, copy=False)


def _eig_desc(m: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Top-k eigenpairs of a symmetric PSD matrix, largest first, and its trace."""
    from scipy.linalg import eigh

    n = m.shape[0]
    with one_blas_thread():  # 10-30x faster than 2 threads on a shared machine
        w, v = eigh(m, subset_by_index=[n - k, n - 1], driver="evr")
    return np.clip(w[::-1], 0, None), v[:, ::-1], float(np.trace(m))


def pca_fit(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact PCA of x (n, d) -> scores (n, k), components (k, d), explained variance ratio (k,).

    Eigen-decompositions only, no SVD: LAPACK's SVD slowed down 10-100x on the shared 2-core
    machine. n >= d: the d x d covariance (float64; above 4096 rows accumulated over float32
    chunks, 13 x 10k x 768 in ~0.5 s); n < d: the n x n Gram matrix. Sign convention as
    scikit-learn: the largest |loading| of each component is positive.
    """
    n, d = x.shape
    x = np.asarray(x, dtype=np.float32) if x.dtype != np.float64 else x
    mu = x.mean(0, dtype=np.float64)
    if n < d:
        xc = x.astype(np.float64) - mu
        var, u, total = _eig_desc(xc @ xc.T, min(k, n))
        comps = (xc.T @ u).T
        norms = np.linalg.norm(comps, axis=1, keepdims=True)
        comps = np.divide(comps, norms, out=np.zeros_like(comps), where=norms > 0)
    else:
        if n <= _SVD_MAX_ROWS:
            xc = x.astype(np.float64) - mu
            cov = xc.T @ xc
        else:
            cov, mu32 = np.zeros((d, d)), mu.astype(np.float32)
            for i in range(0, n, _CHUNK):
                c = x[i : i + _CHUNK] - mu32
                cov += c.T @ c
        var, v, total = _eig_desc(cov, k)
        comps = v.T
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(1)])
    comps = comps * np.where(signs == 0, 1, signs)[:, None]
    ratio = var / total if total > 0 else np.zeros_like(var)
    scores = np.empty((n, k), dtype=np.float64)
    mu32, c32 = mu.astype(x.dtype), comps.T.astype(x.dtype)
    for i in range(0, n, _CHUNK):  # float32 products of centred chunks: 20x faster than f64
        scores[i : i + _CHUNK] = (x[i : i + _CHUNK] - mu32) @ c32
    return scores, comps, ratio


def procrustes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Orthogonal R (k, k) minimising ||a R - b||_F for a, b (n, k)."""
    u, _, vt = np.linalg.svd(a.T @ b)
    return u @ vt


def _tqdm_hook(progress: ProgressFn, stage: str) -> dict:
    """tqdm keywords that route umap-learn's epoch bar to ``progress`` (and let it cancel)."""

    class _File:
        def write(self, s: str) -> None:
            s = s.strip()
            if "/" in s:
                done, total = s.rsplit(" ", 1)[-1].split("/")
                try:
                    progress(stage, int(done) / max(int(total), 1))
                except Exception as e:  # any exception = cancel
                    raise _Stop(str(e)) from e

        def flush(self) -> None:
            pass

    return {"disable": False, "file": _File(), "bar_format": "{n}/{total}", "mininterval": 0.25}


def _umap_kwargs(n: int, dims: int, seed: int, n_neighbors: int) -> dict:
    return {
        "n_components": dims,
        "n_neighbors": max(2, min(n_neighbors, n - 1)),
        "random_state": seed,
        "n_jobs": 1,
        "init": "random" if n < 10 else "spectral",
        "n_epochs": None if n <= 5000 else 200,
    }


def _umap(
    flat: np.ndarray, dims: int, seed: int, n_neighbors: int, progress: ProgressFn
) -> np.ndarray:
    import umap

    progress("PCA-50", 0.0)
    pre = pca_fit(flat, min(50, flat.shape[1], flat.shape[0] - 1))[0].astype(np.float32)
    kw = _umap_kwargs(len(pre), dims, seed, n_neighbors)
    progress("UMAP", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(**kw, tqdm_kwds=_tqdm_hook(progress, "UMAP"))
        return reducer.fit_transform(pre)


def _aligned_umap(
    x: np.ndarray, dims: int, seed: int, n_neighbors: int, progress: ProgressFn
) -> np.ndarray:
    import umap

    n_l, n_u, d = x.shape
    if n_l < 2:
        return _umap(x[0], dims, seed, n_neighbors, progress)[None]
    progress("PCA-50", 0.0)
    pre = [pca_fit(layer, min(50, d, n_u - 1))[0].astype(np.float32) for layer in x]
    kw = _umap_kwargs(n_u, dims, seed, n_neighbors)
    kw.pop("n_jobs"), kw.pop("init")
    ident = {i: i for i in range(n_u)}
    progress("AlignedUMAP", 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.AlignedUMAP(**kw)
        reducer.fit(pre, relations=[ident] * (n_l - 1))
    return np.stack(reducer.embeddings_)


def _aligned_pca(x: np.ndarray, dims: int, progress: ProgressFn) -> tuple[np.ndarray, np.ndarray]:
    n_l, n_u, _ = x.shape
    coords, ev, prev = np.empty((n_l, n_u, dims)), np.empty((n_l, dims)), None
    for i in range(n_l):
        progress("aligned PCA", i / n_l)
        s, _, r = pca_fit(x[i], dims)
        if prev is not None:
            s = s @ procrustes(s, prev)
        coords[i], ev[i], prev = s, r, s
    return coords, ev


def _no_progress(stage: str, fraction: float) -> None:
    pass


def project(
    x: np.ndarray,
    layers: Sequence[int],
    method: str = "pca",
    dims: int = 2,
    standardize: bool = False,
    seed: int = 0,
    n_neighbors: int = 15,
    progress: ProgressFn | None = None,
) -> Projection:
    """Project x (n_layers_sel, n_units, d_model) -> Projection, coords (n_layers_sel, n_units,
    dims). ``layers`` names each row of x. Same inputs and seed give the same coordinates."""
    x = _check(x, layers, method, dims)
    progress = progress or _no_progress
    n_l, n_u, d = x.shape
    if standardize:
        x = _standardize(x)
    ev = None
    if method == "pca":
        progress("PCA", 0.0)
        scores, _, ev = pca_fit(x.reshape(n_l * n_u, d), dims)
        coords = scores.reshape(n_l, n_u, dims)
    elif method == "umap":
        try:
            coords = _umap(x.reshape(n_l * n_u, d), dims, seed, n_neighbors, progress)
        except _Stop as e:
            raise e.__cause__ from None
        coords = coords.reshape(n_l, n_u, dims)
    elif method == "aligned":
        coords, ev = _aligned_pca(x, dims, progress)
    else:
        coords = _aligned_umap(x, dims, seed, n_neighbors, progress)
    progress("done", 1.0)
    return Projection(
        np.ascontiguousarray(coords, dtype=np.float32),
        tuple(int(v) for v in layers),
        method,
        ev,
        DESCRIPTIONS[method],
        standardize,
        seed if "umap" in method else None,
    )


def silhouette_per_layer(x: np.ndarray, labels, max_units: int = 2000, seed: int = 0) -> np.ndarray:
    """Silhouette score (cosine) of ``labels`` (n_units,) at each layer of x (n_layers, n_units,
    d) -> (n_layers,). Above ``max_units`` units, the same seeded sample is scored at every
    layer. NaN where fewer than two labels are present, or every unit has its own label."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(labels)
    if x.ndim != 3 or len(labels) != x.shape[1]:
        raise ValueError("labels must give one label per unit of x (n_layers, n_units, d)")
    if len(set(labels.tolist())) < 2:
        return np.full(x.shape[0], np.nan)
    idx = np.arange(len(labels))
    if len(idx) > max_units:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_units, replace=False))
    lab = labels[idx]
    if not 2 <= len(set(lab.tolist())) < len(lab):  # every unit its own label: undefined
        return np.full(x.shape[0], np.nan)
    return np.array([silhouette_score(layer[idx], lab, metric="cosine") for layer in x])


def neighbour_agreement_per_layer(
    x: np.ndarray, labels, k: int = 10, max_units: int = 5000, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Share of each unit's k nearest neighbours (cosine, itself excluded) with its label, per
    layer of x (n_layers, n_units, d) -> ((n_layers,), chance). ``chance`` = sum of squared
    label shares, what random labels would give. Sampled above ``max_units`` like
    ``silhouette_per_layer``."""
    from sklearn.neighbors import NearestNeighbors

    labels = np.asarray(labels)
    if x.ndim != 3 or len(labels) != x.shape[1]:
        raise ValueError("labels must give one label per unit of x (n_layers, n_units, d)")
    idx = np.arange(len(labels))
    if len(idx) > max_units:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_units, replace=False))
    lab = labels[idx]
    _, counts = np.unique(lab, return_counts=True)
    chance = float(((counts / counts.sum()) ** 2).sum())
    k = min(k, len(idx) - 1)
    if k < 1:
        return np.full(x.shape[0], np.nan), chance
    out = []
    for layer in x:
        nn = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(layer[idx])
        _, nb = nn.kneighbors(layer[idx])
        nb = np.array([row[row != i][:k] for i, row in enumerate(nb)])  # drop the unit itself
        out.append(float((lab[nb] == lab[:, None]).mean()))
    return np.array(out), chance


def warm_umap() -> None:
    """Import umap-learn and compile its numba code on tiny fits, so no user request pays for
    it: both neighbour searches (exact below 4096 points, NN-descent above) and the layout."""
    import umap

    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for approx in (False, True):
            umap.UMAP(
                n_neighbors=5,
                random_state=0,
                n_jobs=1,
                n_epochs=5,
                force_approximation_algorithm=approx,
                tqdm_kwds=_tqdm_hook(_no_progress, "warm-up"),
            ).fit_transform(x)
    log.info("umap-learn warmed up")
