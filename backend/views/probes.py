"""The Probes view: per-layer linear probes with controls, shared by the page and `probes` CLI.

``compute(store, Request) -> Result``; the page draws ``Result`` with ``figures.probes``, the
CLI prints ``Result.to_dict()``.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import pandas as pd

from backend import derived
from backend.analysis.probes import ProbeResult, layer_errors, misclassified, run_probes
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import units

#: bundled models' random-init twins: the default baseline of a probe
TWINS = {"demo": "demo-untrained", "demo-seed1": "demo-untrained"}
Unit = Literal["prompt", "token"]
#: last token; mean over tokens without the special ones ([CLS]/[SEP], <bos>); or mean over
#: every token, specials included (sentence-transformers' mean pooling: its attention mask
#: covers [CLS] and [SEP]; on all-MiniLM-L6-v2 the two differ by a median 16% relative L2)
Pool = Literal["last", "mean", "mean-all"]
POOLS = get_args(Pool)
Method = Literal["logistic", "ridge"]
#: architectures read in both directions: their last token is a separator ([SEP], </s>)
ENCODER_ARCH = re.compile(r"Bert|Roberta|Electra|Deberta|Albert|MPNet|XLM|Encoder", re.I)
POOL_WHY = {
    "mean": "mean over tokens: the default for encoder models ('last' on BERT is always "
    "[SEP]); special tokens ([CLS], [SEP]) left out",
    "last": "last token: the default for causal models (it has read the whole prompt)",
}
POOL_NAME = {"mean": "mean over tokens (specials excluded)", "last": "last token",
             "mean-all": "mean over all tokens incl. specials (sentence-transformers)"}  # fmt: skip


def is_encoder(model: dict) -> bool:
    """An encoder (BERT-like) model row of the store: no LM head, not causal, or a known
    encoder architecture."""
    return (
        model.get("has_lm_head") is False
        or model.get("is_causal") is False
        or bool(ENCODER_ARCH.search(str(model.get("architecture") or "")))
    )


def default_pool(model: dict) -> str:
    """How a prompt unit is pooled by default: ``mean`` for encoders, ``last`` otherwise."""
    return "mean" if is_encoder(model) else "last"


def pool_label(pool: str, model: dict) -> str:
    """``pool`` in words, saying when it is the model's default."""
    if pool == default_pool(model):
        return POOL_WHY[pool]
    return POOL_NAME[pool] + " (chosen)"


@dataclass(frozen=True, kw_only=True)
class Request:
    """Everything that decides a probe's numbers."""

    model_id: str
    set_name: str
    unit: Unit = "prompt"
    pool: Pool = "last"
    folds: int = 5
    method: Method = "logistic"
    layers: tuple[int, ...] | None = None  #: None: every layer
    max_runs: int | None = None  #: token units: only the first N prompts
    baseline_model_id: str | None = None  #: the same probe on this model (a control)
    baseline_name: str | None = None  #: how to call the baseline in tables

    def __post_init__(self):
        if self.unit not in ("prompt", "token"):
            raise LayerScopeError(f"Unknown unit '{self.unit}' (prompt or token).")
        if self.pool not in POOLS:
            raise LayerScopeError(f"Unknown pooling '{self.pool}' ({', '.join(POOLS)}).")
        if self.method not in ("logistic", "ridge"):
            raise LayerScopeError(f"Unknown probe '{self.method}' (logistic or ridge).")
        if not 2 <= self.folds <= 20:
            raise LayerScopeError("Use between 2 and 20 folds.")


@dataclass(frozen=True)
class Result:
    request: Request
    probe: ProbeResult
    meta: pd.DataFrame  #: one row per unit: run_id, text, label, group (, pos, token)
    n_prompts_asked: int  #: prompts the request covered (some may be left out)
    baseline: ProbeResult | None = None

    @property
    def notice(self) -> str | None:
        """How the units were sampled when the set had more than ``units.MAX_UNITS``."""
        return units.notice_of(self.meta)

    @property
    def warning(self) -> str | None:
        """Which layers' logistic fits stopped before the solver's tolerance (None: all met)."""
        parts = [_not_converged(self.probe)]
        if self.baseline is not None:
            parts.append(_not_converged(self.baseline, self.request.baseline_name or "baseline"))
        return " ".join(p for p in parts if p) or None

    @property
    def n_prompts(self) -> int:
        return int(self.meta["run_id"].nunique())

    def to_frame(self) -> pd.DataFrame:
        """One row per layer: accuracy, interval, controls (and the baseline's accuracy)."""
        r = self.probe
        df = pd.DataFrame(
            {
                "layer": r.layers,
                "accuracy": r.accuracy,
                "ci_low": r.ci_low,
                "ci_high": r.ci_high,
                "macro_f1": r.macro_f1,
                "control": r.control,
                "selectivity": r.selectivity,
                "majority": r.majority,
            }
        )
        if r.control_task is not None:
            df["control_task"] = r.control_task
            df["control_selectivity"] = r.control_selectivity
        df["interval_method"] = r.interval_method
        if self.baseline is not None:
            df[f"{self.request.baseline_name or 'baseline'}_accuracy"] = self.baseline.accuracy
        return df

    def misclassified(self, layer: int) -> pd.DataFrame:
        """Units the probe gets wrong at ``layer``, most confident mistake first."""
        r = self.probe
        li = r.layers.index(layer)
        wrong = misclassified(r, layer)
        rows = self.meta.iloc[wrong]
        df = pd.DataFrame(
            {
                "true": [r.classes[r.y[i]] for i in wrong],
                "predicted": [r.classes[r.pred[li, i]] for i in wrong],
                "score": r.scores[li, wrong, r.pred[li, wrong]] if len(wrong) else [],
                "prompt": rows["text"].to_numpy(),
                "run_id": rows["run_id"].to_numpy(),
            }
        )
        if rows["group"].notna().any():
            df.insert(4, "group", rows["group"].to_numpy())
        if self.request.unit == "token":
            df.insert(4, "token", [f"{p}:{t}" for p, t in zip(rows["pos"], rows["token"])])
        return df

    def layer_errors(self, layer: int, borderline: float = 0.1) -> pd.DataFrame:
        """The units wrong (or borderline) at ``layer``, one row each with its out-of-fold
        margin at every layer (``L<k>`` columns: true-class score minus the best other's;
        > 0 right), ordered by ``settles``: the first layer from which it stays right (None:
        wrong at the last layer)."""
        r = self.probe
        e = layer_errors(r, layer, borderline)
        rows = self.meta.iloc[e.units]
        df = pd.DataFrame(
            {
                "prompt": rows["text"].to_numpy(),
                "true": [r.classes[r.y[i]] for i in e.units],
                "at_layer": np.where(e.wrong_at, "wrong", "borderline"),
                "settles": [r.layers[k] if k < len(r.layers) else None for k in e.settles],
                "run_id": rows["run_id"].to_numpy(),
            }
        )
        if rows["group"].notna().any():
            df.insert(1, "group", rows["group"].to_numpy())
        if self.request.unit == "token":
            df.insert(1, "token", [f"{p}:{t}" for p, t in zip(rows["pos"], rows["token"])])
        margins = pd.DataFrame(e.margin, columns=[f"L{L}" for L in r.layers])
        return pd.concat([df, margins], axis=1)

    def group_accuracy(self, layer: int) -> pd.DataFrame:
        """Accuracy per group at ``layer`` (empty when the set has no groups)."""
        if not self.meta["group"].notna().any():
            return pd.DataFrame(columns=["group", "accuracy", "n"])
        li = self.probe.layers.index(layer)
        right = pd.Series(self.probe.pred[li] == self.probe.y)
        g = right.groupby(self.meta["group"].fillna("(none)").to_numpy())
        return pd.DataFrame({"group": g.mean().index, "accuracy": g.mean().values, "n": g.size()})

    def weights_frame(self) -> pd.DataFrame:
        """The probe refitted on all units: one row per (layer, class) with bias and weights."""
        r = self.probe
        names = self.weight_rows()
        return pd.DataFrame(
            [
                {
                    "layer": L,
                    "class": names[c],
                    "bias": r.bias[i, c],
                    **{f"w{j}": v for j, v in enumerate(r.weights[i, c])},
                }
                for i, L in enumerate(r.layers)
                for c in range(r.weights.shape[1])
            ]
        )

    def weight_rows(self) -> list[str]:
        r = self.probe
        return list(r.classes) if r.weights.shape[1] > 1 else [f"{r.classes[1]} vs {r.classes[0]}"]

    def to_dict(self) -> dict:
        r, req = self.probe, self.request
        best = r.best_layer()
        out = {
            "unit": req.unit,
            "pool": req.pool if req.unit == "prompt" else None,
            "method": req.method,
            "classes": list(r.classes),
            "folds": r.folds,
            "n_units": len(r.y),
            "n_prompts": self.n_prompts,
            **({"notice": self.notice} if self.notice else {}),
            **({"warning": self.warning} if self.warning else {}),
            **_per_layer(r),
        }
        wrong = self.misclassified(best).head(10)
        out["misclassified_at_best"] = [
            {"run_id": w.run_id, "text": w.prompt, "true": w.true, "predicted": w.predicted}
            for w in wrong.itertuples()
        ]
        errors = self.layer_errors(best)
        margins = [c for c in errors.columns if c.startswith("L") and c[1:].isdigit()]
        out["errors_at_best"] = [  # where in the layers each goes wrong (the Probes heatmap)
            {
                "run_id": e["run_id"],
                "text": e["prompt"],
                "group": None if pd.isna(e.get("group")) else str(e["group"]),
                "true": e["true"],
                "at_layer": e["at_layer"],
                "settles": None if pd.isna(e["settles"]) else int(e["settles"]),
                "margins": [round(float(e[c]), 4) for c in margins],
            }
            for e in errors.to_dict("records")
        ]
        groups = self.group_accuracy(best)
        out["group_accuracy_at_best"] = {
            str(g.group): round(float(g.accuracy), 4) for g in groups.itertuples()
        }
        if self.baseline is not None:
            out["baseline"] = {"model": req.baseline_name, **_per_layer(self.baseline)}
        return out


def _not_converged(r: ProbeResult, who: str = "") -> str | None:
    if r.converged is None or r.converged.all():
        return None
    bad = [r.layers[i] for i in np.flatnonzero(~r.converged)]
    return (
        f"The logistic probe{' of ' + who if who else ''} did not converge at layer"
        f"{'s' if len(bad) > 1 else ''} {', '.join(map(str, bad))} (L-BFGS stopped before its "
        "tolerance): those accuracies may be slightly low."
    )


def _per_layer(r: ProbeResult) -> dict:
    return {
        "converged": None if r.converged is None else [bool(c) for c in r.converged],
        "layers": list(r.layers),
        "accuracy": r.accuracy.round(4).tolist(),
        "ci_low": r.ci_low.round(4).tolist(),
        "ci_high": r.ci_high.round(4).tolist(),
        "macro_f1": r.macro_f1.round(4).tolist(),
        "control": r.control.round(4).tolist(),
        "selectivity": r.selectivity.round(4).tolist(),
        "majority": round(r.majority, 4),
        "interval_method": r.interval_method,
        "control_task": None if r.control_task is None else r.control_task.round(4).tolist(),
        "control_selectivity": (
            None if r.control_task is None else r.control_selectivity.round(4).tolist()
        ),
        "control_task_draws": (
            None if r.control_task_draws is None else r.control_task_draws.round(4).tolist()
        ),
        "control_task_sd": (
            None if r.control_task_sd is None else r.control_task_sd.round(4).tolist()
        ),
        "best_layer": r.best_layer(),
        "first_decodable": r.first_decodable(),
    }


def probe_units(store: Store, req: Request, model_id: str | None = None):
    """(x (n_layers_sel, n_units, d), labels, groups, meta) of ``req`` on ``model_id``."""
    model_id = model_id or req.model_id
    runs = units.set_runs_or_error(store, req.set_name, model_id)
    layers = list(req.layers or range(store.get_model(model_id)["n_layers"] + 1))
    if req.unit == "prompt":
        if runs["label"].isna().all():
            raise LayerScopeError(f"The set '{req.set_name}' has no labels to probe.")
        x, meta = units.prompt_units(store, runs, layers, req.pool)
    else:
        runs = units.with_token_labels(store, req.set_name, runs.head(req.max_runs or len(runs)))
        if runs["token_labels"].isna().all():
            raise LayerScopeError(f"The set '{req.set_name}' has no per-token labels.")
        # only real per-token labels: a prompt whose labels do not match its tokens is left
        # out rather than falling back to its prompt-level label
        x, meta = units.token_units(store, runs.assign(label=None), layers)
        if meta["label"].isna().all():
            raise LayerScopeError(
                f"No prompt of '{req.set_name}' has one per-token label per "
                "token for this model's tokenizer."
            )
    keep = meta["label"].notna().to_numpy()
    return (
        x[:, keep],
        meta.loc[keep, "label"].astype(str).to_numpy(),
        meta.loc[keep, "idx"].to_numpy(),
        meta[keep].reset_index(drop=True),
    )


CACHE_KIND = "probes"  #: derived-cache kind of a fitted probe (arrays only: no pickles)
_ARRAYS = ("accuracy", "ci_low", "ci_high", "fold_accuracy", "macro_f1", "control", "pred")
_ARRAYS += ("scores", "y", "weights", "bias", "pooled_accuracy", "control_task", "converged")
_ARRAYS += ("control_task_draws",)


def _cache_key(store: Store, req: Request, model_id: str) -> str:
    """Everything that decides the fit: the request's settings, the model, and the set's runs
    with their labels (a replaced set with other labels is another key)."""
    runs = units.set_runs_or_error(store, req.set_name, model_id)
    cols = [c for c in ("run_id", "idx", "label", "group") if c in runs.columns]
    if req.unit == "token":
        runs = units.with_token_labels(store, req.set_name, runs.head(req.max_runs or len(runs)))
        cols.append("token_labels")
    parts = {
        "v": 2,  # 2: logistic iterated to tolerance; control task averaged over draws
        "model_id": model_id,
        "unit": req.unit,
        "pool": req.pool,
        "folds": req.folds,
        "method": req.method,
        # None (every layer, the Request's default) and the explicit list of every layer are
        # the same fit: one key
        "layers": list(req.layers or range(store.get_model(model_id)["n_layers"] + 1)),
        "max_runs": req.max_runs,
        "max_units": units.MAX_UNITS,
        "runs": runs[cols].astype(str).to_numpy().tolist(),
    }
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _to_payload(res: ProbeResult, meta: pd.DataFrame) -> bytes:
    arrays = {k: getattr(res, k) for k in _ARRAYS if getattr(res, k) is not None}
    scalars = {
        "layers": list(res.layers),
        "classes": list(res.classes),
        "majority": float(res.majority),
        "folds": int(res.folds),
        "method": res.method,
        "interval_method": res.interval_method,
    }
    buf, table = io.BytesIO(), io.BytesIO()
    meta.to_parquet(table, index=False)
    np.savez(
        buf,
        **arrays,
        _scalars=np.frombuffer(json.dumps(scalars).encode(), dtype=np.uint8),
        _meta=np.frombuffer(table.getvalue(), dtype=np.uint8),
    )
    return buf.getvalue()


def _from_payload(raw: bytes) -> tuple[ProbeResult, pd.DataFrame]:
    z = np.load(io.BytesIO(raw), allow_pickle=False)  # a cache file is input: no pickles
    sc = json.loads(z["_scalars"].tobytes())
    meta = pd.read_parquet(io.BytesIO(z["_meta"].tobytes()))
    arrays = {k: (z[k] if k in z.files else None) for k in _ARRAYS}
    res = ProbeResult(
        layers=tuple(sc["layers"]),
        classes=tuple(sc["classes"]),
        majority=sc["majority"],
        folds=sc["folds"],
        method=sc["method"],
        interval_method=sc["interval_method"],
        **arrays,
    )
    return res, meta


def _fit(store: Store, req: Request, model_id: str) -> tuple[ProbeResult, pd.DataFrame]:
    """The fitted probe from the store's derived cache, else fitted and stored (a probe with
    its controls and bootstrap interval is the slowest read-only view: seconds per model)."""
    if store is None:  # arrays given directly (tests): nothing to cache in
        return _fit_now(store, req, model_id)
    key = _cache_key(store, req, model_id)
    raw = store.cache_get(CACHE_KIND, key)
    if raw is not None:
        try:
            return _from_payload(raw)
        except (ValueError, KeyError, OSError, TypeError):  # damaged or old entry: refit
            pass
    res, meta = _fit_now(store, req, model_id)
    derived.save(store, CACHE_KIND, key, _to_payload(res, meta))
    return res, meta


def _fit_now(store: Store, req: Request, model_id: str) -> tuple[ProbeResult, pd.DataFrame]:
    x, y, g, meta = probe_units(store, req, model_id)
    layers = list(req.layers) if req.layers else None
    # token units: Hewitt & Liang's control task (each token type gets a random label)
    tokens = meta["token"].astype(str).to_numpy() if req.unit == "token" else None
    try:
        res = run_probes(x, y, g, layers=layers, folds=req.folds, method=req.method, tokens=tokens)
        return res, meta
    except ValueError as e:
        raise LayerScopeError(str(e)) from None


def cached(store: Store, req: Request) -> Result | None:
    """The stored fit of this request (no baseline), or None; never fits. The Prompt page
    shows a prompt's verdicts at once when the Probes page has fitted the same probe."""
    got = derived.load(store, CACHE_KIND, _cache_key(store, req, req.model_id), _from_payload)
    if got is None:
        return None
    res, meta = got
    n_runs = len(units.set_runs_or_error(store, req.set_name, req.model_id))
    return Result(request=req, probe=res, meta=meta, n_prompts_asked=n_runs)


def prompt_row(result: Result, run_id: str) -> pd.DataFrame:
    """One prompt's out-of-fold verdict at every layer of a prompt probe: the predicted class,
    its score, the true class's margin (> 0 right) and right/wrong; empty when the prompt is
    not among the probe's units."""
    where = np.flatnonzero(result.meta["run_id"].to_numpy() == run_id)
    if result.request.unit != "prompt" or len(where) == 0:
        return pd.DataFrame(columns=["layer", "predicted", "score", "margin", "verdict"])
    r, u = result.probe, int(where[0])
    s = r.scores[:, u, :]
    others = np.delete(s, r.y[u], axis=1)
    margin = s[:, r.y[u]] - (others.max(axis=1) if others.shape[1] else -np.inf)
    right = r.pred[:, u] == r.y[u]
    return pd.DataFrame(
        {
            "layer": list(r.layers),
            "predicted": [r.classes[k] for k in r.pred[:, u]],
            "score": s[np.arange(len(r.layers)), r.pred[:, u]],
            "margin": margin,
            "verdict": np.where(right, "right", "wrong"),
        }
    )


def compute(store: Store, req: Request, lm=None) -> Result:
    """Probe every requested layer (and the baseline model, when asked)."""
    res, meta = _fit(store, req, req.model_id)
    n_runs = len(units.set_runs_or_error(store, req.set_name, req.model_id))
    asked = min(n_runs, req.max_runs or n_runs) if req.unit == "token" else n_runs
    baseline = None
    if req.baseline_model_id is not None:
        baseline, _ = _fit(store, req, req.baseline_model_id)
    return Result(request=req, probe=res, meta=meta, n_prompts_asked=asked, baseline=baseline)
