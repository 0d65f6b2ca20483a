"""Gather the vectors a view needs from the store: prompt units (pooled) or token units.

Returns arrays (n_layers_sel, n_units, d_model) and a unit table with the text behind each
point (run, prompt, position, token, label, group) so that views never lose track of what a
point stands for.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend.errors import LayerScopeError
from backend.store import Store


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
    store: Store, runs: pd.DataFrame, layers: list[int], pool: str = "last"
) -> tuple[np.ndarray, pd.DataFrame]:
    """One unit per run (prompt), pooled per layer."""
    x = store.pooled(runs["run_id"].tolist(), pool, layers)
    meta = runs[["run_id", "idx", "text", "label", "group"]].reset_index(drop=True).copy()
    meta["pos"] = -1
    meta["token"] = ""
    return x, meta


def token_units(
    store: Store, runs: pd.DataFrame, layers: list[int], skip_special: bool = True
) -> tuple[np.ndarray, pd.DataFrame]:
    """Every token of the given runs; per-token labels when the set has them."""
    xs, metas = [], []
    for r in runs.itertuples():
        h = store.run_layers(r.run_id)[layers]
        toks = store.tokens(r.run_id)
        keep = ~toks["is_special"].to_numpy() if skip_special else np.ones(len(toks), bool)
        xs.append(h[:, keep])
        m = toks.loc[keep, ["pos", "token"]].copy()
        m["run_id"], m["idx"], m["text"], m["group"] = r.run_id, r.idx, r.text, r.group
        m["label"] = r.label
        tl = getattr(r, "token_labels", None)
        if isinstance(tl, list) and len(tl) == int(keep.sum()):
            m["label"] = tl
        metas.append(m)
    if not xs:
        raise LayerScopeError("No tokens to show.")
    return np.concatenate(xs, axis=1), pd.concat(metas, ignore_index=True)


def with_token_labels(store: Store, set_name: str, runs: pd.DataFrame) -> pd.DataFrame:
    s = store.get_set(set_name)[["idx", "token_labels"]]
    return runs.merge(s, on="idx", how="left")
