"""Cross-run commitment: do sampled runs of one prompt settle, and does that predict agreement?

``states`` per prompt: (n_runs, n_layers, n_steps, d) — step k is the residual stream at the
position that produces generated token k (step 0 = last prompt token).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np


@dataclass(frozen=True)
class Commitment:
    similarity: np.ndarray  #: (n_layers, n_steps) mean pairwise cosine across runs
    divergence_step: int | None  #: first step whose generated tokens differ (None: never)
    n_runs: int


def pairwise_cosine_mean(v: np.ndarray) -> float:
    """Mean cosine over distinct pairs of rows of v (n, d)."""
    n = len(v)
    if n < 2:
        return float("nan")
    u = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    s = u.sum(0)
    return float((s @ s - (u * u).sum()) / (n * (n - 1)))


def commitment(states: np.ndarray, tokens: list[list[str]]) -> Commitment:
    """states: (n_runs, n_layers, n_steps, d); tokens: each run's generated tokens."""
    n, n_l, n_s, _ = states.shape
    sim = np.array([[pairwise_cosine_mean(states[:, li, k]) for k in range(n_s)]
                    for li in range(n_l)])
    div = None
    for k in range(max(map(len, tokens))):
        if len({tuple(t[: k + 1]) for t in tokens}) > 1:
            div = k
            break
    return Commitment(sim, div, n)


def consistency(outcomes: list[str]) -> float:
    """Share of pairs of runs with the same outcome (1 = all agree)."""
    pairs = list(combinations(outcomes, 2))
    return float(np.mean([a == b for a, b in pairs])) if pairs else float("nan")


@dataclass(frozen=True)
class Correlation:
    pearson: float
    spearman: float
    ci_low: float  #: bootstrap 95% interval of Pearson's r
    ci_high: float
    n: int


def correlate(x, y, n_boot: int = 1000, seed: int = 0) -> Correlation:
    from scipy.stats import pearsonr, spearmanr

    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return Correlation(float("nan"), float("nan"), float("nan"), float("nan"), len(x))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, len(x), len(x))
        if x[i].std() > 0 and y[i].std() > 0:
            boots.append(np.corrcoef(x[i], y[i])[0, 1])
    lo, hi = np.percentile(boots, [2.5, 97.5]) if boots else (np.nan, np.nan)
    return Correlation(float(pearsonr(x, y)[0]), float(spearmanr(x, y)[0]), float(lo),
                       float(hi), len(x))


def correlation_grid(sims: list[np.ndarray], cons: list[float]) -> np.ndarray:
    """Pearson r of commitment at each (layer, step) with consistency across prompts.
    sims: per prompt (n_layers, n_steps); steps cut to the shortest."""
    n_s = min(s.shape[1] for s in sims)
    stack = np.stack([s[:, :n_s] for s in sims])  # (n_prompts, n_layers, n_steps)
    out = np.full(stack.shape[1:], np.nan)
    for li in range(stack.shape[1]):
        for k in range(n_s):
            out[li, k] = correlate(stack[:, li, k], cons, n_boot=0).pearson
    return out
