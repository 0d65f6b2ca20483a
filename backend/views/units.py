"""Gather the vectors a view needs from the store: prompt units (pooled) or token units.

Returns arrays (n_layers_sel, n_units, d_model) and a unit table with the text behind each
point (run, prompt, position, token, label, group) so that views never lose track of what a
point stands for.

A set larger than a view can hold whole (more than ``MAX_UNITS`` units) is sampled uniformly
without replacement with a fixed seed, before any vector is read, and says so: the unit
table's ``attrs["notice"]`` reads "showing 100,000 of 1,204,311 tokens, random sample, seed 0"
(:func:`notice_of`; the views' results expose it as ``.notice`` and the pages show it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend.errors import LayerScopeError
from backend.store import Store

MAX_UNITS = 100_000  #: units a view gathers whole; beyond, a seeded uniform sample
SEED = 0


def sample_notice(kept: int, total: int, what: str, seed: int = SEED) -> str:
    return f"showing {kept:,} of {total:,} {what}, random sample, seed {seed}"


def notice_of(meta: pd.DataFrame) -> str | None:
    """The sampling notice of a unit table (None when every unit is there)."""
    return meta.attrs.get("notice")


def _pick(n: int, max_units: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a uniform sample without replacement of ``max_units`` (default
    ``MAX_UNITS``, read at call time) of n, or None (keep all)."""
    max_units = MAX_UNITS if max_units is None else max_units
    if n <= max_units:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, max_units, replace=False))


def parse_layers(spec: str | None, n_layers: int) -> list[int]:
    """'a:b' (inclusive), 'a,b,c' or None (all) -> layer list within 0..n_layers."""
    if spec in (None, "", "all"):
        return list(range(n_layers + 1))
    try:
        if ":" in spec:
            a, b = spec.split(":")
            out = list(range(int(a or 0), int(b or n_layers) + 1))
        else:
            out = [int(v) for v in spec.split(",")]
    except ValueError:
        raise LayerScopeError(f"Bad layer range '{spec}': use a:b or a,b,c.") from None
    bad = [v for v in out if not 0 <= v <= n_layers]
    if bad or not out:
        raise LayerScopeError(f"Layers must lie in 0..{n_layers}; got {spec}.")
    return out


def set_runs_or_error(store: Store, set_name: str, model_id: str) -> pd.DataFrame:
    runs = store.set_runs(set_name, model_id)
    if runs.empty:
        raise LayerScopeError(f"No runs of set '{set_name}' for this model; extract it first.")
    # a set saved before duplicates were folded at import may list one text twice: one unit
    return runs.drop_duplicates("run_id", keep="first").reset_index(drop=True)


def prompt_units(
    store: Store,
    runs: pd.DataFrame,
    layers: list[int],
    pool: str = "last",
    max_units: int | None = None,
    seed: int = SEED,
) -> tuple[np.ndarray, pd.DataFrame]:
    """One unit per run (prompt), pooled per layer; beyond ``max_units`` prompts a seeded
    sample (said in the unit table's notice)."""
    n_all = len(runs)
    pick = _pick(n_all, max_units, seed)
    if pick is not None:
        runs = runs.iloc[pick]
    ids = runs["run_id"].tolist()
    x = _mean_all(store, ids, layers) if pool == "mean-all" else store.pooled(ids, pool, layers)
    meta = runs[["run_id", "idx", "text", "label", "group"]].reset_index(drop=True).copy()
    meta["pos"] = -1
    meta["token"] = ""
    if pick is not None:
        meta.attrs["notice"] = sample_notice(len(pick), n_all, "prompts", seed)
    return x, meta


def _mean_all(store: Store, run_ids: list[str], layers: list[int]) -> np.ndarray:
    """(n_layers_sel, n_runs, d) mean over every token of each run, special tokens included
    (sentence-transformers' mean pooling); ``store.pooled(.., "mean")`` leaves specials out."""
    out = None
    for li, layer in enumerate(layers):
        x, where = store.layer(run_ids, layer)
        codes = pd.Categorical(where["run_id"], categories=run_ids).codes
        sums = np.zeros((len(run_ids), x.shape[1]))
        np.add.at(sums, codes, x.astype(np.float64))
        counts = np.bincount(codes, minlength=len(run_ids))[:, None]
        if out is None:
            out = np.zeros((len(layers), len(run_ids), x.shape[1]), np.float32)
        out[li] = sums / np.maximum(counts, 1)
    return out


def token_units(
    store: Store,
    runs: pd.DataFrame,
    layers: list[int],
    skip_special: bool = True,
    max_units: int | None = None,
    seed: int = SEED,
) -> tuple[np.ndarray, pd.DataFrame]:
    """Every token of the given runs; per-token labels when the set has them. Beyond
    ``max_units`` tokens a seeded sample, chosen from the token tables before any vector is
    read (said in the unit table's notice)."""
    meta = token_table(store, runs, skip_special, max_units, seed)
    return read_tokens(store, meta["run_id"].tolist(), meta["pos"].to_numpy(), layers), meta


def token_table(
    store: Store,
    runs: pd.DataFrame,
    skip_special: bool = True,
    max_units: int | None = None,
    seed: int = SEED,
) -> pd.DataFrame:
    """The unit table of :func:`token_units` without reading a vector (one query for every
    run's tokens): pos, token, run_id, idx, text, group, label; beyond ``max_units`` tokens the
    seeded sample, with its notice. A view that keeps a sample of it reads only that sample
    (:func:`read_tokens`)."""
    runs = runs.reset_index(drop=True)
    t = store.token_table(runs["run_id"].tolist())
    if skip_special:
        t = t[~t["is_special"].to_numpy(dtype=bool)]
    k = t["k"].to_numpy()
    if not len(k):
        raise LayerScopeError("No tokens to show.")
    meta = pd.DataFrame({"pos": t["pos"].to_numpy(), "token": t["token"].to_numpy()})
    for col in ("run_id", "idx", "text", "group"):
        meta[col] = runs[col].to_numpy()[k]
    meta["idx"] = meta["idx"].astype(np.int64)
    label = runs["label"].to_numpy(dtype=object)[k]
    if "token_labels" in runs:  # per-token labels of a run whose kept tokens they match
        counts = np.bincount(k, minlength=len(runs))
        starts = np.r_[0, np.cumsum(counts)]
        for i, tl in enumerate(runs["token_labels"]):
            if isinstance(tl, list) and len(tl) == counts[i]:
                label[starts[i] : starts[i + 1]] = tl
    meta["label"] = label
    pick = _pick(len(meta), max_units, seed)
    if pick is not None:
        n_all = len(meta)
        meta = meta.iloc[pick].reset_index(drop=True)
        meta.attrs["notice"] = sample_notice(len(pick), n_all, "tokens", seed)
    return meta


def read_tokens(store: Store, run_ids: list[str], pos, layers: list[int]) -> np.ndarray:
    """The vectors of token units (run_ids[i], pos[i]) at each layer: float32 (len(layers),
    n_units, d_model). One ``Store.rows`` read per layer (only the units' rows are converted),
    so a sample never holds every token of every layer in memory."""
    run_ids, pos = list(run_ids), np.asarray(pos, dtype=np.int64)
    return np.stack([store.rows(run_ids, pos, layer) for layer in layers])


def with_token_labels(store: Store, set_name: str, runs: pd.DataFrame) -> pd.DataFrame:
    s = store.get_set(set_name)[["idx", "token_labels"]]
    return runs.merge(s, on="idx", how="left")
