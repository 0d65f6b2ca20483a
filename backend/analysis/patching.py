"""The mean over minimal pairs of a patching map, with a bootstrap interval over pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.analysis.probes import N_BOOT


@dataclass(frozen=True)
class PairMean:
    mean: np.ndarray  #: (...) mean over pairs of each cell
    lo: np.ndarray  #: (...) lower end of the percentile interval
    hi: np.ndarray  #: (...) upper end
    n_pairs: int
    description: str  #: e.g. "bootstrap over 24 pairs (1000 resamples, 95%)"


def pair_interval(
    values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95
) -> PairMean:
    """``values`` (n_pairs, ...): one map per pair. Percentile bootstrap of the mean that
    resamples *pairs* with replacement, the same scheme as ``probes.pooled_interval`` (one
    (n_boot, n_pairs) matrix of multinomial counts from ``default_rng(seed)``), so on 0/1
    values with one unit per prompt both give the same interval."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim < 1 or len(v) < 1:
        raise ValueError("pair_interval needs at least one pair.")
    n = len(v)
    flat = v.reshape(n, -1)
    mean = flat.mean(0)
    if n < 2 or n_boot < 1:
        lo = hi = mean
        how = f"{n} pair: no interval"
    else:
        rng = np.random.default_rng(seed)
        w = rng.multinomial(n, np.full(n, 1 / n), size=n_boot).astype(float)
        boots = (w @ flat) / n  # (n_boot, cells)
        a = (1 - level) / 2
        lo, hi = np.quantile(boots, [a, 1 - a], axis=0)
        how = f"bootstrap over {n} pairs ({n_boot} resamples, {level:.0%})"
    shape = v.shape[1:]
    return PairMean(mean.reshape(shape), lo.reshape(shape), hi.reshape(shape), n, how)


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(x)]
    r = np.empty(len(x))
    for s, e in zip(starts, ends):
        r[order[s:e]] = (s + e + 1) / 2
    return r


def spearman(a, b) -> float | None:
    """Spearman's rank correlation of two equal-length sequences (Pearson on the ranks, ties
    given their mean rank); None when it is undefined (fewer than 2 values, or one sequence
    constant)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(a) != len(b):
        raise ValueError("spearman needs two sequences of the same length.")
    if len(a) < 2:
        return None
    ra, rb = _ranks(a) - (len(a) + 1) / 2, _ranks(b) - (len(b) + 1) / 2
    den = float(np.sqrt((ra**2).sum() * (rb**2).sum()))
    return None if den == 0 else float((ra * rb).sum() / den)
