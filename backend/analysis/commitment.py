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


# -- beyond surface agreement ----------------------------------------------------------------
def _token_matrix(tokens: Sequence[Sequence]) -> tuple[np.ndarray, np.ndarray]:
    """Runs' tokens (any hashable values) -> (n_runs, longest) int codes and a valid mask."""
    longest = max((len(t) for t in tokens), default=0)
    codes: dict = {}
    m = np.full((len(tokens), longest), -1, np.int64)
    for i, t in enumerate(tokens):
        m[i, : len(t)] = [codes.setdefault(v, len(codes)) for v in t]
    return m, m >= 0


def surface_agreement_by_step(tokens: Sequence[Sequence], n_steps: int) -> np.ndarray:
    """(n_steps,) surface agreement of one prompt's runs at each step k = 0..n_steps-1.

    At step k a state has read generated tokens 0..k-1. The agreement of two runs up to step
    k is the share of those positions (that both runs reached) where they emitted the same
    token; the value is the mean over distinct pairs of runs that share at least one such
    position. Step 0 has read nothing yet and is 1 (every run is the same so far); NaN
    where no pair qualifies. This is the covariate to partial out of commitment
    (:func:`partial_correlation`): similarity after step 0 partly re-measures it.
    """
    t, ok = _token_matrix(tokens)
    n = len(t)
    out = np.full(n_steps, np.nan)
    if n_steps:
        out[0] = 1.0 if n >= 2 else np.nan
    if n < 2 or n_steps < 2:
        return out
    width = min(n_steps - 1, t.shape[1])
    a, b = np.triu_indices(n, 1)
    both = ok[a, :width] & ok[b, :width]  # (pairs, width)
    same = both & (t[a, :width] == t[b, :width])
    cb, cs = both.cumsum(1), same.cumsum(1)  # up to step k = column k - 1
    for k in range(1, n_steps):
        j = min(k, width) - 1
        if j < 0:
            continue
        has = cb[:, j] > 0
        if has.any():
            out[k] = float((cs[has, j] / cb[has, j]).mean())
    return out


def surface_agreement(tokens: Sequence[Sequence], k: int) -> float:
    """Mean pairwise token overlap of the runs' first ``k`` generated tokens (see
    :func:`surface_agreement_by_step`: the covariate at step k)."""
    return float(surface_agreement_by_step(tokens, k + 1)[k])


@dataclass(frozen=True)
class PartialCorrelation:
    r: float  #: correlation of x and y with z partialled out (NaN when not available)
    raw: float  #: the same correlation without z
    p: float  #: two-sided p-value (t-test with n - 2 - k degrees of freedom)
    perm_p: float  #: permutation p-value (residuals of x permuted against those of y)
    ci_low: float  #: bootstrap percentile interval (prompts resampled, z refitted each time)
    ci_high: float
    n: int  #: prompts with x, y and every z finite
    method: str  #: "pearson" or "spearman" (ranks of x, y and each z column)
    level: float = 0.95
    available: bool = True
    needed: int = 0  #: more prompts needed (0 when available)
    warning: str = ""


def _residualise(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Residuals of v (..., n) after least squares on [1, z] (..., n, k)."""
    design = np.concatenate([np.ones(z.shape[:-1] + (1,)), z], -1)
    beta = np.linalg.pinv(design) @ v[..., None]
    return v - (design @ beta)[..., 0]


def _partial_rows(x, y, z) -> np.ndarray:
    return _pearson_rows(_residualise(x, z), _residualise(y, z))


def partial_correlation(
    x,
    y,
    z,
    method: str = "pearson",
    n_boot: int = 2000,
    n_perm: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    min_n: int = MIN_N,
) -> PartialCorrelation:
    """Correlation of x and y (n,) controlling for z ((n,) or (n, k)): the correlation of the
    residuals of x and of y after least squares on z with an intercept. With one z this equals
    (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)). ``method="spearman"`` ranks x, y and
    each column of z first (average ranks for ties). Pairs with any non-finite value are
    dropped; below ``min_n`` prompts nothing is reported. The p-value is the t-test with
    n - 2 - k degrees of freedom; ``perm_p`` permutes the residuals (seeded); the interval
    is a percentile bootstrap over prompts that refits the residualisation every time.
    """
    from scipy.stats import rankdata
    from scipy.stats import t as t_dist

    if method not in ("pearson", "spearman"):
        raise ValueError(f"method must be pearson or spearman, not '{method}'")
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    z = np.asarray(z, float)
    z = z[:, None] if z.ndim == 1 else z
    if not (x.shape == y.shape and z.ndim == 2 and len(z) == len(x)):
        raise ValueError("x, y and z must have one value (z: one row) per prompt")
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(z).all(1)
    x, y, z = x[ok], y[ok], z[ok]
    n, k = len(x), z.shape[1]
    nan = _NAN
    min_n = max(int(min_n), k + 4)
    if n < min_n:
        return PartialCorrelation(
            nan, nan, nan, nan, nan, nan, n, method, level, False, min_n - n,
            f"{n} prompts: a partial correlation needs at least {min_n} ({min_n - n} more).",
        )  # fmt: skip
    if method == "spearman":
        x, y = rankdata(x), rankdata(y)
        z = rankdata(z, axis=0)
    raw = float(_pearson_rows(x, y))
    rx, ry = _residualise(x, z), _residualise(y, z)
    r = float(_pearson_rows(rx, ry))
    if not np.isfinite(r):
        return PartialCorrelation(
            nan, raw, nan, nan, nan, nan, n, method, level, False, 0,
            "Nothing of x or y is left once z is accounted for: no partial correlation.",
        )  # fmt: skip
    df = n - 2 - k
    tt = r * np.sqrt(df / max(1 - r * r, 1e-300))
    p = float(2 * t_dist.sf(abs(tt), df))
    perm_p = permutation_p(rx, ry, n_perm, seed)
    lo = hi = nan
    if n_boot > 0:
        idx = np.random.default_rng(seed).integers(0, n, (n_boot, n))
        bx, by, bz = x[idx], y[idx], z[idx]
        if method == "spearman":
            bx, by, bz = rankdata(bx, axis=1), rankdata(by, axis=1), rankdata(bz, axis=1)
        lo, hi = _quantiles(_partial_rows(bx, by, bz), level)
    warning = f"Only {n} prompts: intervals are wide." if n < SMALL_N else ""
    return PartialCorrelation(r, raw, p, perm_p, lo, hi, n, method, level, True, 0, warning)


@dataclass(frozen=True)
class HeldOutCell:
    """The best (layer, step) chosen on one half of the prompts, reported on the other."""

    layer: int | None  #: None when no cell had a correlation on the selection half
    step: int | None
    r_select: float  #: Pearson r at the cell on the selection half (biased upward in |r|)
    r: float  #: Pearson r at the cell on the held-out half (unbiased by the choice)
    partial_r: float  #: held-out partial r controlling for z (NaN without z)
    n_select: int  #: prompts in the selection half with a value at the cell
    n_test: int  #: prompts in the held-out half with a value at the cell
    select: np.ndarray  #: (n_prompts,) bool, True for the selection half
    seed: int
    held_out: Correlation | None = None  #: full held-out correlation (p-value, interval)
    held_out_partial: PartialCorrelation | None = None


def held_out_best_cell(
    sims,
    consistency_,
    z=None,
    seed: int = 0,
    min_prompts: int = 3,
    method: str = "pearson",
) -> HeldOutCell:
    """Choose the (layer, step) with the largest |r| between commitment and consistency on a
    random half of the prompts (seeded), and report r there on the other half.

    sims: (n_prompts, n_layers, n_steps); consistency_: (n_prompts,); z: the covariate to
    partial out on the held-out half, (n_prompts,) or (n_prompts, n_steps) (e.g.
    :func:`surface_agreement_by_step` of each prompt: the step's column is used). The largest
    of ~45 in-sample |r| is biased upward even on noise; the held-out r is not, since the
    choice never saw those prompts. ``method`` is used for the held-out partial correlation.
    The held-out numbers follow :func:`correlate`'s rules (NaN below ``MIN_N`` prompts).
    """
    sims = np.asarray(sims, float)
    c = np.asarray(consistency_, float)
    if sims.ndim != 3 or c.shape != sims.shape[:1]:
        raise ValueError(
            "sims must be (n_prompts, n_layers, n_steps) with one consistency per prompt"
        )
    n = len(c)
    rng = np.random.default_rng(seed)
    select = np.zeros(n, bool)
    select[rng.permutation(n)[: n // 2]] = True
    grid = correlation_grid(sims[select], c[select], min_prompts)
    nan = _NAN
    if grid.best is None:
        return HeldOutCell(None, None, nan, nan, nan, 0, 0, select, seed)
    li, k = grid.best
    test = ~select
    xt, yt = sims[test, li, k], c[test]
    held = correlate(xt, yt)
    part = None
    pr = nan
    if z is not None:
        zz = np.asarray(z, float)
        zz = zz[:, k] if zz.ndim == 2 else zz
        if zz.shape != (n,):
            raise ValueError("z must be (n_prompts,) or (n_prompts, n_steps)")
        part = partial_correlation(xt, yt, zz[test], method=method)
        pr = part.r
    n_test = int((np.isfinite(xt) & np.isfinite(yt)).sum())
    return HeldOutCell(
        int(li), int(k), float(grid.r[li, k]), held.pearson, pr, int(grid.n[li, k]), n_test,
        select, seed, held, part,
    )  # fmt: skip


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
