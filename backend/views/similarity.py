"""The Similarity view's data: gather aligned units from the store, build a heatmap.

Shared by pages/similarity.py and `python -m backend similarity`. Units are prompts (pooled
'last' or 'mean' vector) or tokens (every non-special token, sampled down to ``max_units``);
across models they are aligned by (prompt_id, position), never by run id.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backend.analysis import similarity as similarity_analysis
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views.units import read_tokens

log = logging.getLogger(__name__)

KINDS = ("layer-cka", "layer-cosine", "prompt", "token", "model-cka")
ALIASES = {"layer-cka-debiased": "layer-cka", "model-cka-debiased": "model-cka"}
UNITS = ("tokens", "last", "mean")
ORDERS = ("cluster", "label", "group", "none")
MAX_UNITS = 4000
MAX_PROMPTS = 2000  #: prompt x prompt matrices beyond this many prompts show a seeded sample


@dataclass(frozen=True, kw_only=True)
class Request:
    kind: str  #: one of KINDS (or an ALIASES key, which implies debiased)
    model_id: str
    set_name: str
    layer: int | None = None  #: prompt/token kinds; default: last layer
    other_model_id: str | None = None  #: model-cka
    units: str = "tokens"  #: layer/model kinds: tokens | last | mean; prompt kind: last | mean
    run_id: str | None = None  #: token kind; default: first prompt of the set
    order: str = "cluster"  #: prompt kind: cluster | label | group | none
    debiased: bool = False  #: CKA kinds
    max_units: int = MAX_UNITS  #: token units beyond this are sampled (seed 0)
    center: bool = False  #: prompt/token kinds: subtract the mean vector before cosine


@dataclass(frozen=True, kw_only=True)
class Result:
    request: Request
    matrix: similarity_analysis.SimilarityMatrix
    units: pd.DataFrame  #: rows of a unit x unit matrix, or the units behind a layer x layer one
    n_available: int  #: units before sampling
    caption: str

    def to_frame(self) -> pd.DataFrame:
        """The matrix with its row labels as the index and its column labels as columns."""
        m = self.matrix
        return pd.DataFrame(
            m.values, index=[str(r) for r in m.rows], columns=[str(c) for c in m.cols]
        )

    def to_dict(self) -> dict:
        m = self.matrix
        return {
            "kind": m.kind,
            "measure": m.measure,
            "range": [m.vmin, m.vmax],
            "rows": [str(r) for r in m.rows],
            "cols": [str(c) for c in m.cols],
            "matrix": [
                [None if math.isnan(v) else round(float(v), 5) for v in row] for row in m.values
            ],
            "order": [int(i) for i in m.order] if m.order is not None else None,
            "row_labels": list(m.row_labels) if m.row_labels is not None else None,
            "units": self.request.units,
            "n_units": len(self.units),
            "n_available": int(self.n_available),
            "caption": self.caption,
            "note": m.note,
        }


def gather(
    store: Store, runs: pd.DataFrame, layers: list[int], units: str, max_units: int | None = None
) -> tuple[np.ndarray, pd.DataFrame]:
    """Vectors of the set's units: (len(layers), n_units, d_model) and one row per unit;
    beyond ``max_units`` units the view's seeded sample (:func:`_sample`), drawn from the unit
    table before any vector is read."""
    meta = unit_table(store, runs, units)
    pick = None if max_units is None else _sample(len(meta), max_units)
    if pick is not None:
        meta = meta.iloc[pick].reset_index(drop=True)
    return read_units(store, meta, layers, units), meta


_COLS = ["run_id", "idx", "prompt_id", "text", "label", "group"]


def unit_table(store: Store, runs: pd.DataFrame, units: str) -> pd.DataFrame:
    """One row per unit, no vector read: a prompt (pos = the pooling) or a non-special token
    (run_id, pos, then the run's columns), in the set's order."""
    if units in ("last", "mean"):
        return runs[_COLS].reset_index(drop=True).assign(pos=units)
    if units != "tokens":
        raise LayerScopeError(f"Units must be one of {', '.join(UNITS)}; got '{units}'.")
    runs = runs.reset_index(drop=True)
    t = store.token_table(runs["run_id"].tolist())
    t = t[~t["is_special"].to_numpy(dtype=bool)]
    k = t["k"].to_numpy()
    meta = pd.DataFrame({"run_id": t["run_id"].to_numpy(), "pos": t["pos"].to_numpy(np.int64)})
    for col in _COLS[1:]:
        meta[col] = runs[col].to_numpy()[k]
    return meta


def read_units(store: Store, meta: pd.DataFrame, layers: list[int], units: str) -> np.ndarray:
    """The vectors of a unit table's rows at each layer: (len(layers), n_units, d_model)."""
    if units in ("last", "mean"):
        return store.pooled(meta["run_id"].tolist(), units, layers)
    return read_tokens(store, meta["run_id"].tolist(), meta["pos"].to_numpy(), layers)


def _sample(n: int, max_units: int) -> np.ndarray | None:
    if n <= max_units:
        return None
    return np.sort(np.random.default_rng(0).choice(n, max_units, replace=False))


def _layers(store: Store, model_id: str) -> list[int]:
    return list(range(store.get_model(model_id)["n_layers"] + 1))


def _runs(store: Store, set_name: str, model_id: str, who: str = "this model") -> pd.DataFrame:
    runs = store.set_runs(set_name, model_id)
    if runs.empty:
        raise LayerScopeError(
            f"There are no activations of set '{set_name}' for {who} yet; extract them first."
        )
    return runs


def compute(store: Store, req: Request, lm=None) -> Result:
    """The heatmap a request asks for (LayerScopeError with a sentence when it cannot be)."""
    kind = ALIASES.get(req.kind, req.kind)
    debiased = req.debiased or req.kind in ALIASES
    if kind not in KINDS:
        raise LayerScopeError(
            f"Unknown similarity kind '{req.kind}'; use one of {', '.join(KINDS)}."
        )
    runs = _runs(store, req.set_name, req.model_id)
    layers = _layers(store, req.model_id)
    if kind == "token":
        return _token_view(store, runs, layers, req)
    if kind == "prompt":
        return _prompt_view(store, runs, layers, req)
    meta = unit_table(store, runs, req.units)  # the units first; only the sample is read
    n_available = len(meta)
    if kind == "model-cka":
        if req.other_model_id is None:
            raise LayerScopeError("Choose a second model to compare with.")
        other = store.get_model(req.other_model_id)
        o_runs = _runs(store, req.set_name, req.other_model_id, other["ref"])
        o_layers = _layers(store, req.other_model_id)
        o_meta = unit_table(store, o_runs, req.units)
        names = (store.get_model(req.model_id)["ref"], other["ref"])
        try:
            similarity_analysis.require_same_units(_keys(meta), _keys(o_meta), names)
        except ValueError as e:
            raise LayerScopeError(str(e)) from None
        if req.units == "tokens":
            _require_same_tokens(store, meta, o_meta, names)
    pick = _sample(len(meta), req.max_units)
    if pick is not None:
        meta = meta.iloc[pick].reset_index(drop=True)
    x = read_units(store, meta, layers, req.units)
    try:
        if kind == "layer-cosine":
            m = similarity_analysis.layer_cosine_matrix(x, layers)
        elif kind == "layer-cka":
            m = similarity_analysis.layer_cka(x, layers, debiased)
        else:
            if pick is not None:
                o_meta = o_meta.iloc[pick].reset_index(drop=True)
            y = read_units(store, o_meta, o_layers, req.units)
            m = similarity_analysis.model_cka(x, y, layers, o_layers, debiased)
    except ValueError as e:
        raise LayerScopeError(str(e)) from None
    return Result(
        request=req,
        matrix=m,
        units=meta,
        n_available=n_available,
        caption=_caption(req.units, len(meta), n_available, runs),
    )


def _token_strings(store: Store, meta: pd.DataFrame) -> list[str]:
    """The token text of each token unit (meta rows: run_id, pos)."""
    text = {}
    for run_id in meta["run_id"].unique():
        t = store.tokens(run_id)
        text.update({(run_id, int(p)): tok for p, tok in zip(t["pos"], t["token"])})
    return [text[(r, int(p))] for r, p in zip(meta["run_id"], meta["pos"])]


def _require_same_tokens(store: Store, a: pd.DataFrame, b: pd.DataFrame, names) -> None:
    """Token units of two models pair up only if both cut the prompts into the same tokens:
    position 3 of two tokenizers can be different words (``<unk>`` vs ``dog``)."""
    ta, tb = _token_strings(store, a), _token_strings(store, b)
    diff = next((i for i, (u, v) in enumerate(zip(ta, tb)) if u.strip() != v.strip()), None)
    if diff is not None:
        raise LayerScopeError(
            f"{names[0]} and {names[1]} tokenize the prompts differently (prompt "
            f"{a['idx'].iloc[diff]}, position {a['pos'].iloc[diff]}: {ta[diff]!r} vs "
            f"{tb[diff]!r}), so their token units do not correspond; compare prompt units "
            "(last or mean) instead."
        )


def _keys(meta: pd.DataFrame) -> list[tuple]:
    return list(zip(meta["prompt_id"], meta["pos"]))


def _caption(units: str, n: int, n_available: int, runs: pd.DataFrame) -> str:
    what = {
        "tokens": "token units",
        "last": "prompts (last token)",
        "mean": "prompts (mean over tokens)",
    }[units]
    sampled = f" (a fixed random sample of {n_available:,})" if n < n_available else ""
    return f"{n:,} {what}{sampled} from {len(runs)} prompts."


def _prompt_view(store: Store, runs: pd.DataFrame, layers: list[int], req: Request) -> Result:
    layer = _check_layer(req.layer, layers)
    pool = req.units if req.units in ("last", "mean") else "last"
    n_available = len(runs)
    pick = _sample(n_available, MAX_PROMPTS)  # an n x n matrix: 10k prompts would be 0.4 GB
    if pick is not None:
        runs = runs.iloc[pick].reset_index(drop=True)
    x, meta = gather(store, runs, [layer], pool)
    labels = meta["label"].tolist()
    has_labels = any(isinstance(v, str) and v for v in labels)
    if req.order == "label" and not has_labels:
        raise LayerScopeError(f"Set '{req.set_name}' has no labels; order by cluster instead.")
    strip, order = (labels if has_labels else None), req.order
    if req.order == "group":  # by group (the colour strip shows the groups), stable
        strip, order = [g if isinstance(g, str) else None for g in meta["group"]], "label"
        if not any(strip):
            raise LayerScopeError(f"Set '{req.set_name}' has no groups; order by cluster instead.")
    names = [f"{i}: {_short(t)}" for i, t in zip(meta["idx"], meta["text"])]
    m = similarity_analysis.pairwise_cosine(x[0], names, "prompt", strip, order, req.center)
    caption = _caption(pool, len(meta), n_available, runs) + f" Layer {layer}."
    return Result(
        request=req,
        matrix=m,
        units=meta,
        n_available=n_available,
        caption=caption.replace(f"from {len(runs)} prompts", f"of {n_available:,}"),
    )


def _token_view(store: Store, runs: pd.DataFrame, layers: list[int], req: Request) -> Result:
    layer = _check_layer(req.layer, layers)
    run_id = req.run_id or runs["run_id"].iloc[0]
    row = runs[runs["run_id"] == run_id]
    if row.empty:
        raise LayerScopeError("That prompt is not part of this set for this model.")
    toks = store.tokens(run_id)
    h = store.run_layers(run_id)[layer]
    names = [f"{p}:{t}" for p, t in zip(toks["pos"], toks["token"])]
    m = similarity_analysis.pairwise_cosine(h, names, "token", center=req.center)
    meta = toks.assign(run_id=run_id, idx=row["idx"].iloc[0], text=row["text"].iloc[0])
    return Result(
        request=req,
        matrix=m,
        units=meta,
        n_available=len(toks),
        caption=f"{len(toks)} tokens of prompt {row['idx'].iloc[0]}, layer {layer}.",
    )


def _check_layer(layer: int | None, layers: list[int]) -> int:
    layer = layers[-1] if layer is None else layer
    if layer not in layers:
        raise LayerScopeError(f"Layer must lie in 0..{layers[-1]}; got {layer}.")
    return layer


def _short(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def turning_units(
    store: Store, req: Request, view: Result, i: int, j: int, k: int = 5
) -> pd.DataFrame:
    """The k units of a layer x layer view whose vectors differ most between layers i and j
    (lowest cosine), with that cosine. For the pair a user clicked."""
    a, b = read_units(store, view.units, [i, j], req.units)  # only the view's units
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    worst = np.argsort(cos)[:k]
    return view.units.iloc[worst].assign(cosine=cos[worst]).reset_index(drop=True)


# -- run x run: the sampled runs of one prompt (the Generation page's data) ------------------
def sampled_requests(store: Store, model_id: str) -> pd.DataFrame:
    """The model's sampled prompts (one row per request, ``settings`` parsed) with a ``name``
    each for a picker; empty when nothing was sampled."""
    import json

    req = store.sampled_requests(model_id)
    if req.empty:
        return req
    req = req.assign(settings=req["settings"].map(json.loads))
    names = [
        f"{r.text}  ({r.samples} runs, T={r.settings['temperature']}, "
        f"seed {r.settings['seed']}, {r.settings['max_new_tokens']} new tokens)"
        for r in req.itertuples()
    ]
    return req.assign(name=names)


def run_set(store: Store, model_id: str, requests: pd.DataFrame, i: int):
    """The sampled set holding request ``i`` of :func:`sampled_requests` (every request with
    the same settings) and that prompt's index in it; (None, None) when it has < 2 runs."""
    from backend.records import Sampling
    from backend.views import generation

    opts = requests["settings"].iloc[i]
    samp = Sampling.from_options({**opts, "samples": int(requests["samples"].iloc[i])})
    same = [t for t, o in zip(requests["text"], requests["settings"]) if o == opts]
    ss = generation.load(store, model_id, same, samp, opts["dtype"])
    text = requests["text"].iloc[i]
    k = next((j for j, p in enumerate(ss.prompts) if p.text == text), None) if ss else None
    return (ss, k) if k is not None else (None, None)


def run_matrix(
    store: Store, ss, k: int, layer: int, step: int
) -> similarity_analysis.SimilarityMatrix:
    """Run x run cosine of prompt ``k`` of a sampled set at (layer, step), centred like its
    commitment; rows named by each run's continuation."""
    from backend.views import generation

    return generation.run_by_run(store, ss, k, layer, step)
