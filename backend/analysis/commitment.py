"""Cross-run commitment: do sampled runs of one prompt settle, and does that predict agreement?

Words. A prompt is sampled ``n_runs`` times. **Step** k is the residual stream at the position
that produces generated token k: step 0 is the last prompt token (identical in every run),
step k >= 1 has read generated tokens 0..k-1. **Commitment** at (layer, step) is the mean
cosine over distinct pairs of runs. **Consistency** is the share of pairs of runs whose
outcomes (answers) agree. **Outcome separation** (CLUE-style) classifies each run's hidden-state
delta (last generated step minus prompt end) by the nearest of the success / failure centroids
of the *other* prompts' runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


# -- one prompt -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Commitment:
    similarity: np.ndarray  #: (n_layers, n_steps) mean pairwise cosine; NaN where < 2 runs
    runs_at_step: np.ndarray  #: (n_steps,) how many runs reach each step (runs stop at <eos>)
    divergence_step: int | None  #: first generated token index where runs differ; None: never
    n_runs: int

    def __post_init__(self) -> None:
        if self.similarity.ndim != 2 or self.runs_at_step.shape != self.similarity.shape[1:]:
            raise ValueError("similarity must be (n_layers, n_steps) with one count per step")


def mean_pairwise_cosine(x: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Mean cosine over distinct pairs of runs.

    x: (n_runs, ..., d); valid: (n_runs, ...) bool, runs that have this entry (default all).
    Returns (...): NaN where fewer than two runs are valid. A zero vector counts as cosine 0.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError("x must be (n_runs, ..., d)")
    valid = np.ones(x.shape[:-1], bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != x.shape[:-1]:
        raise ValueError(f"valid must have shape {x.shape[:-1]}, got {valid.shape}")
    norm = np.linalg.norm(np.where(valid[..., None], x, 0.0), axis=-1, keepdims=True)
    u = np.where(valid[..., None] & (norm > 0), x / np.maximum(norm, 1e-300), 0.0)
    s = u.sum(0)
    self_dots = (u * u).sum(-1).sum(0)
    m = valid.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = ((s * s).sum(-1) - self_dots) / (m * (m - 1.0))
    return np.where(m >= 2, out, np.nan)


def divergence_step(tokens: Sequence[Sequence]) -> int | None:
    """First index k at which the runs' generated tokens differ (a run that already ended
    does not take part). None when every run produced the same tokens."""
    longest = max((len(t) for t in tokens), default=0)
    for k in range(longest):
        if len({t[k] for t in tokens if len(t) > k}) > 1:
            return k
    return None


def commitment(
    states: np.ndarray, tokens: Sequence[Sequence], valid: np.ndarray | None = None
) -> Commitment:
    """states: (n_runs, n_layers, n_steps, d); tokens: each run's generated tokens;
    valid: (n_runs, n_steps) bool, which steps each run reached (default all)."""
    states = np.asarray(states)
    if states.ndim != 4:
        raise ValueError("states must be (n_runs, n_layers, n_steps, d_model)")
    n, n_l, n_s, _ = states.shape
    if len(tokens) != n:
        raise ValueError(f"{n} runs of states but tokens for {len(tokens)} runs")
    valid = np.ones((n, n_s), bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != (n, n_s):
        raise ValueError(f"valid must be (n_runs, n_steps) = {(n, n_s)}")
    sim = mean_pairwise_cosine(states, np.broadcast_to(valid[:, None, :], (n, n_l, n_s)))
    return Commitment(sim, valid.sum(0), divergence_step(tokens), n)


def consistency(outcomes: Sequence) -> float:
    """Share of distinct pairs of runs with the same outcome (1 = all agree); NaN if < 2 runs."""
    _, counts = np.unique(np.asarray([str(o) for o in outcomes]), return_counts=True)
    n = int(counts.sum())
    if n < 2:
        return float("nan")
    return float((counts * (counts - 1)).sum() / (n * (n - 1)))


def run_similarity(x: np.ndarray) -> np.ndarray:
    """Cosine between every pair of runs. x: (n_runs, d) -> (n_runs, n_runs)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("x must be (n_runs, d_model)")
    u = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    return u @ u.T


# -- across prompts ---------------------------------------------------------------------------
MIN_N = 8  #: fewer prompts than this: no correlation is reported
SMALL_N = 20  #: fewer prompts than this: a warning (intervals are wide, Pearson fragile)
HEAVY_TIES = 0.25  #: a variable with more than this share of tied values gets a warning
_NAN = float("nan")


@dataclass(frozen=True)
class Correlation:
    pearson: float
    spearman: float  #: tie-aware (average ranks of values rounded to ``tie_decimals``)
    ci_low: float  #: bootstrap percentile interval of Pearson's r (resampling prompts)
    ci_high: float
    n: int  #: prompts with both values finite
    level: float = 0.95
    spearman_ci_low: float = _NAN  #: bootstrap percentile interval of Spearman's rho
    spearman_ci_high: float = _NAN
    spearman_p: float = _NAN  #: two-sided permutation p-value of Spearman's rho
    pearson_p: float = _NAN  #: two-sided permutation p-value of Pearson's r (same permutations)
    available: bool = True  #: False below ``min_n`` prompts (or a constant variable)
    needed: int = 0  #: how many more prompts a correlation needs (0 when available)
    tied_x: float = _NAN  #: share of x values equal to another x value
    tied_y: float = _NAN
    warning: str = ""  #: why the numbers should be read with care ("" when nothing to say)


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks of a 1-D array, 1-based; ties share their mean rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    first = np.r_[True, xs[1:] != xs[:-1]]
    start = np.flatnonzero(first)
    end = np.r_[start[1:], len(x)]
    avg = (start + end + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, end - start)
    return ranks


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair. x, y: (..., n) -> (...); NaN for a constant row."""
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / den
    return np.where(den > 1e-12, np.clip(r, -1, 1), np.nan)


def tied_share(x) -> float:
    """Share of the values of x that equal at least one other value."""
    _, counts = np.unique(np.asarray(x), return_counts=True)
    return float(counts[counts > 1].sum() / max(len(x), 1))


def _quantiles(v: np.ndarray, level: float) -> tuple[float, float]:
    v = v[np.isfinite(v)]
    if not len(v):
        return _NAN, _NAN
    a = (1 - level) / 2
    lo, hi = np.quantile(v, [a, 1 - a])
    return float(lo), float(hi)


def permutation_p(x, y, n_perm: int = 2000, seed: int = 0, chunk: int = 2_000_000) -> float:
    """Two-sided permutation p-value of Pearson's r between x and y (pass ranks for
    Spearman): (1 + #{|r_perm| >= |r|}) / (1 + n_perm), y permuted ``n_perm`` times (seeded),
    vectorised in blocks of about ``chunk`` numbers."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    r = float(_pearson_rows(x, y))
    if not np.isfinite(r) or n_perm < 1:
        return _NAN
    rng = np.random.default_rng(seed)
    hits, done, block = 0, 0, max(1, chunk // max(len(x), 1))
    while done < n_perm:
        b = min(block, n_perm - done)
        perm = np.argsort(rng.random((b, len(y))), axis=1)
        rp = _pearson_rows(x[None], y[perm])
        hits += int((np.abs(rp) >= abs(r) - 1e-12).sum())
        done += b
    return (1 + hits) / (1 + n_perm)


def correlate(
    x,
    y,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    n_perm: int = 2000,
    min_n: int = MIN_N,
    tie_decimals: int | None = 6,
    names: tuple[str, str] = ("x", "y"),
) -> Correlation:
    """Pearson and Spearman correlation of x and y (1-D, same length; non-finite pairs are
    dropped) with bootstrap percentile intervals (resampling pairs, ``n_boot``, seeded) and
    permutation p-values (``n_perm``, seeded).

    Spearman is tie-aware: values equal after rounding to ``tie_decimals`` decimals (None:
    exact) share their average rank (``scipy.stats.rankdata(method="average")``), so the
    commitment of runs that agree exactly (1 up to float noise) is not ranked by noise.
    Below ``min_n`` prompts, or when a variable is constant, nothing is reported
    (``available`` False, NaN numbers, ``needed`` = prompts still missing). ``warning`` flags
    fewer than ``SMALL_N`` prompts or more than ``HEAVY_TIES`` of a variable tied (Pearson is
    then unreliable: read Spearman and its permutation p-value); ``names`` label x and y there.
    """
    from scipy.stats import rankdata

    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length ({len(x)} vs {len(y)})")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    min_n = max(int(min_n), 3)
    nan = _NAN
    if n < min_n:
        return Correlation(
            nan, nan, nan, nan, n, level, available=False, needed=min_n - n,
            warning=f"{n} prompts: a correlation needs at least {min_n} "
            f"({min_n - n} more).",
        )  # fmt: skip
    xr, yr = (v if tie_decimals is None else np.round(v, tie_decimals) for v in (x, y))
    tx, ty = tied_share(xr), tied_share(yr)
    if np.ptp(xr) == 0 or np.ptp(yr) == 0:
        return Correlation(
            nan, nan, nan, nan, n, level, available=False, tied_x=tx, tied_y=ty,
            warning="One variable is constant over the prompts: no correlation.",
        )  # fmt: skip
    rx, ry = rankdata(xr), rankdata(yr)
    r = float(_pearson_rows(x, y))
    rho = float(_pearson_rows(rx, ry))
    lo = hi = s_lo = s_hi = nan
    if n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
        lo, hi = _quantiles(_pearson_rows(x[idx], y[idx]), level)
        bx = rankdata(xr[idx], axis=1)
        by = rankdata(yr[idx], axis=1)
        s_lo, s_hi = _quantiles(_pearson_rows(bx, by), level)
    p_s = permutation_p(rx, ry, n_perm, seed)
    p_r = permutation_p(x, y, n_perm, seed)
    notes = []
    if n < SMALL_N:
        notes.append(f"only {n} prompts: intervals are wide")
    heavy = [f"{t:.0%} of {v}" for t, v in zip((tx, ty), names) if t > HEAVY_TIES]
    if heavy:
        notes.append(f"{' and '.join(heavy)} values are tied: Pearson is unreliable, read Spearman")
    warning = "; ".join(notes)
    warning = warning[:1].upper() + warning[1:] + "." if warning else ""
    return Correlation(
        r, rho, lo, hi, n, level, s_lo, s_hi, p_s, p_r, True, 0, tx, ty, warning
    )  # fmt: skip


@dataclass(frozen=True)
class CorrelationGrid:
    r: np.ndarray  #: (n_layers, n_steps) Pearson r of commitment with consistency over prompts
    n: np.ndarray  #: (n_layers, n_steps) prompts with a finite commitment at the cell
    best: tuple[int, int] | None  #: (layer, step) with the largest |r|; None if all NaN


def correlation_grid(
    sims: np.ndarray, consistency_: np.ndarray, min_prompts: int = 3
) -> CorrelationGrid:
    """sims: (n_prompts, n_layers, n_steps) commitment per prompt (NaN where undefined);
    consistency_: (n_prompts,). Pearson r per cell over the prompts that have it."""
    sims = np.asarray(sims, float)
    c = np.asarray(consistency_, float)
    if sims.ndim != 3 or c.shape != sims.shape[:1]:
        raise ValueError(
            "sims must be (n_prompts, n_layers, n_steps) with one consistency per prompt"
        )
    ok = np.isfinite(sims) & np.isfinite(c)[:, None, None]
    n = ok.sum(0)
    w = ok.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = (np.where(ok, sims, 0) * w).sum(0) / n
        my = (np.where(ok, c[:, None, None], 0) * w).sum(0) / n
        dx = np.where(ok, sims - mx, 0)
        dy = np.where(ok, c[:, None, None] - my, 0)
        den = np.sqrt((dx * dx).sum(0) * (dy * dy).sum(0))
        r = (dx * dy).sum(0) / den
    r = np.where((n >= min_prompts) & (den > 1e-12), np.clip(r, -1, 1), np.nan)
    best = None
    if np.isfinite(r).any():
        li, k = np.unravel_index(np.nanargmax(np.abs(r)), r.shape)
        best = (int(li), int(k))
    return CorrelationGrid(r, n, best)


# -- outcome separation (CLUE-style) ----------------------------------------------------------
@dataclass(frozen=True)
class OutcomeSeparation:
    accuracy: np.ndarray  #: (n_layers,) nearest-centroid accuracy over judged runs
    auroc: np.ndarray  #: (n_layers,) AUROC of ``score`` for success over judged runs
    score: np.ndarray  #: (n_layers, n_runs) d(failure centroid) - d(success); NaN: not judged
    success: np.ndarray  #: (n_runs,) bool, the true outcome
    judged: np.ndarray  #: (n_runs,) bool: the other prompts had runs of both outcomes
    best_layer: int | None  #: layer with the highest AUROC

    def predicted(self, layer: int) -> np.ndarray:
        """(n_runs,) bool: predicted success at this layer (False where not judged)."""
        return np.nan_to_num(self.score[layer], nan=-1.0) > 0

    def misjudged(self, layer: int) -> np.ndarray:
        """Indices of judged runs whose prediction at this layer is wrong."""
        return np.flatnonzero(self.judged & (self.predicted(layer) != self.success))


def auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count one half). NaN without both classes."""
    score, positive = np.asarray(score, float), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def outcome_separation(
    deltas: np.ndarray, success: np.ndarray, groups: Sequence
) -> OutcomeSeparation:
    """Leave-one-prompt-out nearest-centroid classification of runs by their delta.

    deltas: (n_runs, n_layers, d) hidden-state change of each run (last generated step minus
    prompt end); success: (n_runs,) bool; groups: (n_runs,) prompt of each run. For each
    prompt, the success and failure centroids are the means of the other prompts' runs;
    a run is predicted a success when it is closer (Euclidean) to the success centroid.
    """
    x = np.asarray(deltas, dtype=np.float64)
    y = np.asarray(success, bool)
    g = np.asarray(groups)
    if x.ndim != 3 or y.shape != x.shape[:1] or g.shape != x.shape[:1]:
        raise ValueError(
            "deltas must be (n_runs, n_layers, d) with one outcome and one prompt per run"
        )
    if len(np.unique(g)) < 2:
        raise ValueError("Outcome separation needs runs of at least two prompts.")
    if y.all() or not y.any():
        raise ValueError("Outcome separation needs both successful and failed runs.")
    n, n_l, _ = x.shape
    tot = np.stack([x[~y].sum(0), x[y].sum(0)])  # (2, n_layers, d): failure, success
    cnt = np.array([(~y).sum(), y.sum()], float)
    score = np.full((n_l, n), np.nan)
    for grp in np.unique(g):
        m = g == grp
        rest = cnt - np.array([(~y[m]).sum(), y[m].sum()])
        if (rest == 0).any():
            continue
        cen = (tot - np.stack([x[m & ~y].sum(0), x[m & y].sum(0)])) / rest[:, None, None]
        xm = x[m]  # (k, n_layers, d)
        d_fail = np.linalg.norm(xm - cen[0], axis=-1)
        d_succ = np.linalg.norm(xm - cen[1], axis=-1)
        score[:, m] = (d_fail - d_succ).T
    judged = np.isfinite(score[0])
    acc = np.array(
        [
            ((score[li, judged] > 0) == y[judged]).mean() if judged.any() else np.nan
            for li in range(n_l)
        ]
    )
    roc = np.array([auroc(score[li, judged], y[judged]) for li in range(n_l)])
    best = int(np.nanargmax(roc)) if np.isfinite(roc).any() else None
    return OutcomeSeparation(acc, roc, score, y, judged, best)
