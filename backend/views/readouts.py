"""Glue between the store and probes / lens / stats, shared by pages and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend import models
from backend.analysis.lens import LensResult, LensSummary, logit_lens, summarize
from backend.analysis.probes import ProbeResult, run_probes
from backend.analysis.stats import LayerStats, layer_stats
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import units

TWINS = {"demo": "demo-untrained", "demo-seed1": "demo-untrained"}


def probe_units(
    store: Store,
    set_name: str,
    model_id: str,
    unit: str = "prompt",
    pool: str = "last",
    max_runs: int | None = None,
    layers: list[int] | None = None,
):
    """(x (n_layers_sel, n_units, d), labels, groups, meta) for a probe."""
    runs = units.set_runs_or_error(store, set_name, model_id)
    layers = layers or list(range(store.get_model(model_id)["n_layers"] + 1))
    if unit == "prompt":
        if runs["label"].isna().all():
            raise LayerScopeError(f"The set '{set_name}' has no labels to probe.")
        x, meta = units.prompt_units(store, runs, layers, pool)
    else:
        runs = units.with_token_labels(store, set_name, runs.head(max_runs or len(runs)))
        if runs["token_labels"].isna().all():
            raise LayerScopeError(f"The set '{set_name}' has no per-token labels.")
        # only real per-token labels: a prompt whose labels do not match its tokens is left
        # out rather than falling back to its prompt-level label
        x, meta = units.token_units(store, runs.assign(label=None), layers)
        if meta["label"].isna().all():
            raise LayerScopeError(
                f"No prompt of '{set_name}' has one per-token label per "
                "token for this model's tokenizer."
            )
    keep = meta["label"].notna().to_numpy()
    return (
        x[:, keep],
        meta.loc[keep, "label"].astype(str).to_numpy(),
        meta.loc[keep, "idx"].to_numpy(),
        meta[keep].reset_index(drop=True),
    )


def probe(
    store: Store,
    set_name: str,
    model_id: str,
    unit="prompt",
    pool="last",
    folds=5,
    method="logistic",
    max_runs=None,
    layers: list[int] | None = None,
) -> tuple[ProbeResult, pd.DataFrame]:
    """Probe every layer (or ``layers``); meta = the unit table (run_id, text, pos, token...)."""
    x, y, g, meta = probe_units(store, set_name, model_id, unit, pool, max_runs, layers)
    try:
        return run_probes(x, y, g, layers=layers, folds=folds, method=method), meta
    except ValueError as e:
        raise LayerScopeError(str(e)) from None


def lens_for_hidden(lm: models.LoadedModel, hidden: np.ndarray, k: int = 5) -> LensResult:
    if not lm.info.has_lm_head or lm.unembed is None:
        raise LayerScopeError(
            f"The logit lens does not apply to {lm.info.ref}: it has no "
            "language-model head (an encoder such as BERT)."
        )
    return logit_lens(hidden, lm.final_norm, lm.unembed, k=k)


def vocab(lm: models.LoadedModel) -> list[str]:
    tok = lm.tokenizer
    return tok.batch_decode([[i] for i in range(lm.info.vocab_size)])


def decode(lm: models.LoadedModel, ids) -> dict[int, str]:
    """Text of each distinct token id in ``ids`` (only those: vocabularies are large)."""
    uniq = sorted({int(i) for i in np.asarray(ids).ravel()})
    return dict(zip(uniq, lm.tokenizer.batch_decode([[i] for i in uniq])))


def lens_run(
    store: Store, lm: models.LoadedModel, run_id: str, k: int = 5
) -> tuple[LensResult, list[str]]:
    """The lens of one stored run and its tokens."""
    res = lens_for_hidden(lm, store.run_layers(run_id), k)
    return res, store.tokens(run_id)["token"].tolist()


def lens_summary(
    store: Store, lm: models.LoadedModel, run_ids: list[str], positions: str = "last"
) -> LensSummary:
    """The lens over many stored runs of one model, aggregated per layer."""
    if not run_ids:
        raise LayerScopeError("No runs to summarise.")
    return summarize([lens_for_hidden(lm, store.run_layers(r), 1) for r in run_ids], positions)


def stats(
    store: Store, set_name: str, model_id: str, max_runs: int = 200
) -> tuple[LayerStats, pd.DataFrame]:
    """Statistics over every token (special ones included: they carry the massive
    activations) of up to ``max_runs`` runs of the set. meta: one row per token unit with
    run_id, pos, token, text and ``name`` = "token (prompt…)" for hovers."""
    runs = units.set_runs_or_error(store, set_name, model_id).head(max_runs)
    layers = list(range(store.get_model(model_id)["n_layers"] + 1))
    x, meta = units.token_units(store, runs, layers, skip_special=False)
    meta["name"] = [f"{t!r} in '{txt[:30]}'" for t, txt in zip(meta["token"], meta["text"])]
    return layer_stats(x, layers), meta
