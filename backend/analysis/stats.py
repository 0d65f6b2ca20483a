"""Layer statistics of the residual stream (pure): norms, massive activations, effective rank,
anisotropy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayerStats:
    layers: tuple[int, ...]
    norm_quantiles: np.ndarray  #: (n_layers, 5) norms at quantiles 0.05, 0.25, 0.5, 0.75, 0.95
    max_abs: np.ndarray  #: (n_layers,) largest |value|
    median_abs: np.ndarray  #: (n_layers,) median |value|
    massive_dim: np.ndarray  #: (n_layers,) dimension of the largest |value|
    massive_unit: np.ndarray  #: (n_layers,) unit (token row) of the largest |value|
    effective_rank: np.ndarray  #: (n_layers,)
    anisotropy: np.ndarray  #: (n_layers,) mean pairwise cosine, self-pairs excluded

    @property
    def massive_ratio(self) -> np.ndarray:
        return self.max_abs / np.where(self.median_abs > 0, self.median_abs, np.nan)


def effective_rank(x: np.ndarray) -> float:
    """exp(entropy of the normalised singular values) of x (n, d) (Roy & Vetterli 2007)."""
    s = np.linalg.svd(np.asarray(x, dtype=np.float64), compute_uv=False)
    if s.sum() == 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def anisotropy(x: np.ndarray) -> float:
    """Mean cosine over all pairs of distinct rows (computed from the sum of unit vectors)."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if n < 2:
        return float("nan")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    u = x / np.where(norms > 0, norms, 1)
    s = u.sum(0)
    self_sum = (u * u).sum()
    return float((s @ s - self_sum) / (n * (n - 1)))


def layer_stats(x: np.ndarray, layers=None) -> LayerStats:
    """x: (n_layers, n_units, d)."""
    x = np.asarray(x, dtype=np.float32)
    n_l = x.shape[0]
    norms = np.linalg.norm(x, axis=2)
    q = np.quantile(norms, [0.05, 0.25, 0.5, 0.75, 0.95], axis=1).T
    a = np.abs(x).reshape(n_l, -1)
    flat_idx = a.argmax(1)
    unit, dim = np.unravel_index(flat_idx, x.shape[1:])
    return LayerStats(
        tuple(range(n_l)) if layers is None else tuple(layers), q, a.max(1),
        np.median(a, axis=1), dim, unit,
        np.array([effective_rank(layer) for layer in x]),
        np.array([anisotropy(layer) for layer in x]),
    )
