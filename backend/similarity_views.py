"""Build the similarity matrices a view asks for, from the store (shared by page and CLI)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend import units
from backend.analysis import similarity as S
from backend.errors import LayerScopeError
from backend.store import Store

KINDS = ("layer-cka", "layer-cka-debiased", "layer-cosine", "prompt", "token", "model-cka")


def compute(store: Store, kind: str, model_id: str, set_name: str, layer: int | None = None,
            other_model_id: str | None = None, pool: str = "last", run_id: str | None = None,
            order: str = "cluster") -> tuple[S.SimilarityMatrix, pd.DataFrame]:
    """Returns the matrix and a table describing its rows (units)."""
    runs = units.set_runs_or_error(store, set_name, model_id)
    n_layers = store.get_model(model_id)["n_layers"]
    layers = list(range(n_layers + 1))
    if kind in ("layer-cka", "layer-cka-debiased", "layer-cosine"):
        x, meta = units.prompt_units(store, runs, layers, pool)
        if kind == "layer-cosine":
            v, lo = S.layer_cosine(x), -1.0
        else:
            v, lo = S.cka_matrix(x, debiased=kind.endswith("debiased")), 0.0
        return S.SimilarityMatrix(v, tuple(layers), tuple(layers), kind, lo, 1.0), meta
    if kind == "model-cka":
        if other_model_id is None:
            raise LayerScopeError("Choose a second model to compare with.")
        other = store.set_runs(set_name, other_model_id)
        if other.empty:
            raise LayerScopeError(f"The other model has no runs of '{set_name}' yet.")
        try:
            S.require_same_units(zip(runs["prompt_id"], runs["n_tokens"]),
                                 zip(other["prompt_id"], other["n_tokens"]))
        except ValueError as e:
            raise LayerScopeError(str(e)) from None
        xa, meta = units.prompt_units(store, runs, layers, pool)
        n_other = store.get_model(other_model_id)["n_layers"]
        xb, _ = units.prompt_units(store, other, list(range(n_other + 1)), pool)
        v = S.cka_matrix(xa, xb)
        return S.SimilarityMatrix(v, tuple(layers), tuple(range(n_other + 1)), kind, 0, 1), meta
    layer = n_layers if layer is None else layer
    if kind == "prompt":
        x, meta = units.prompt_units(store, runs, [layer], pool)
        v = S.cosine_matrix(x[0])
        ordering = (S.cluster_order(v) if order == "cluster"
                    else S.label_order(meta["label"].fillna("")))
        names = tuple(f"{i}: {t[:40]}" for i, t in zip(meta["idx"], meta["text"]))
        return S.SimilarityMatrix(v, names, names, kind, -1, 1, ordering), meta
    if kind == "token":
        run_id = run_id or runs["run_id"].iloc[0]
        h = store.run_layers(run_id)[layer]
        toks = store.tokens(run_id)
        names = tuple(f"{p}:{t}" for p, t in zip(toks["pos"], toks["token"]))
        return S.SimilarityMatrix(S.cosine_matrix(h), names, names, kind, -1, 1), toks
    raise LayerScopeError(f"Unknown similarity kind '{kind}'.")
