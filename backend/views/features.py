"""The Features view: a browser over the latents of a sparse dictionary of one layer.

The dictionary (a TopK SAE) is trained on the set's cached token states, or imported in
SAELens's layout (``backend/views/dictionaries.py``); this view only reads it and the cache:
it encodes the set's token units (special tokens excluded; a seeded sample beyond
``units.MAX_UNITS``) and lists the latents by density, largest activation, or association with
the set's labels (AUROC of label vs rest on each prompt's last token, the best label per
latent). For one feature: its top-activating contexts (the token inside its prompt), the
histogram of its non-zero activations, its density, the label association with a seeded
bootstrap interval over prompts, and — with the model — its logit effects: the decoder row
through the final norm's weight and the unembedding (a direct-path approximation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import dictionaries, units

SORTS = ("density", "max_act", "auroc")
BOOTSTRAP = 200


@dataclass(frozen=True, kw_only=True)
class Request:
    model_id: str
    set_name: str
    layer: int
    latents: int = 256  #: the trained dictionary's settings (its cache key)
    k: int = 8
    seed: int = 0
    imported: bool = False  #: browse the dictionary imported for this layer instead
    feature: int | None = None  #: the latent to detail (default: the first of the sort)
    sort: str = "auroc"
    top: int = 10  #: contexts shown for the feature
    bins: int = 30
    probe_k: int = 8  #: latents of the sparse probe (0: none)

    def __post_init__(self):
        if self.sort not in SORTS:
            raise LayerScopeError(f"Unknown sort '{self.sort}' (one of {', '.join(SORTS)}).")
        if self.layer < 0:
            raise LayerScopeError("The layer must be 0 (embeddings) or more.")
        if not 1 <= self.k <= self.latents:
            raise LayerScopeError(f"k must lie in 1..{self.latents}; got {self.k}.")
        if self.feature is not None and self.feature < 0:
            raise LayerScopeError("A feature id is 0 or more.")
        if self.probe_k < 0:
            raise LayerScopeError("The sparse probe's k is 0 (none) or more.")
        if self.top < 1 or self.bins < 2:
            raise LayerScopeError("Show at least one context and two histogram bins.")


@dataclass(frozen=True)
class Detail:
    """One feature's readout."""

    feature: int
    density: float
    max_act: float
    contexts: pd.DataFrame  #: run_id, pos, token, activation, text, label, tokens (its prompt)
    hist_counts: np.ndarray  #: non-zero activations
    hist_edges: np.ndarray
    auroc: dict  #: label -> (auroc, low, high), label vs rest at the last token
    decoder_row: np.ndarray | None = None  #: (d_in,) the feature's direction in the residual
    logit_top: list = field(default_factory=list)  #: [(token, effect)], direct path, or []
    logit_bottom: list = field(default_factory=list)


@dataclass(frozen=True)
class Result:
    request: Request
    info: dict  #: the dictionary's settings and quality numbers
    table: pd.DataFrame  #: one row per latent: latent, density, max_act, auroc, auroc_label
    detail: Detail | None
    notice: str | None = None
    #: the sparse probe's numbers (``analysis.features.SparseProbe.to_dict``), or why there is
    #: none ({"skipped": reason})
    sparse_probe: dict | None = None

    def to_frame(self) -> pd.DataFrame:
        return self.table

    def to_dict(self) -> dict:
        t = self.table
        out = {
            "dictionary": self.info,
            "n_tokens": int(self.info.get("n_browsed_tokens", 0)),
            "sort": self.request.sort,
            "latents": t.head(50).replace({np.nan: None}).to_dict("records"),
            "notice": self.notice,
            "sparse_probe": self.sparse_probe,
        }
        d = self.detail
        if d is not None:
            out["feature"] = {
                "id": d.feature,
                "density": d.density,
                "max_act": d.max_act,
                "auroc": {k: list(v) for k, v in d.auroc.items()},
                "contexts": d.contexts.drop(columns=["tokens"]).to_dict("records"),
                "histogram": {"counts": d.hist_counts.tolist(), "edges": d.hist_edges.tolist()},
            }
            if d.logit_top:
                out["feature"]["logit_effects"] = {
                    "method": "direct-path approximation (decoder row · final norm weight · W_U)",
                    "top": d.logit_top,
                    "bottom": d.logit_bottom,
                }
        return out


def auroc_matrix(a: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of each column of ``a`` (n, m) for ``positive`` (n,) bool vs the rest (ties count
    half: the Mann–Whitney statistic with average ranks)."""
    from scipy.stats import rankdata

    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return np.full(a.shape[1], np.nan)
    r = rankdata(a, axis=0)
    return (r[positive].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def bootstrap_auroc(a: np.ndarray, positive: np.ndarray, seed: int = 0, n: int = BOOTSTRAP):
    """(auroc, 2.5 %, 97.5 %) of one column over prompts resampled with replacement."""
    point = float(auroc_matrix(a[:, None], positive)[0])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), (n, len(a)))
    vals = [auroc_matrix(a[p, None], positive[p])[0] for p in picks]
    vals = np.asarray([v for v in vals if np.isfinite(v)])
    if not len(vals):
        return point, float("nan"), float("nan")
    return point, float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))


def _dictionary(store: Store, req: Request) -> dictionaries.Dictionary:
    dictionaries.check_layer(store, req.model_id, req.layer)
    if req.imported:
        return dictionaries.require(store, req.model_id, req.layer, None)
    return dictionaries.require(
        store, req.model_id, req.layer, req.set_name, latents=req.latents, k=req.k, seed=req.seed
    )


def last_rows(meta: pd.DataFrame) -> np.ndarray:
    """Index of each prompt's last (non-special) token in the unit table, in prompt order."""
    m = meta.reset_index(drop=True)
    return m.groupby("run_id", sort=False)["pos"].idxmax().to_numpy()


def compute(store: Store, req: Request, lm=None) -> Result:
    d = _dictionary(store, req)
    sae = d.sae
    runs = units.set_runs_or_error(store, req.set_name, req.model_id)
    meta = units.token_table(store, runs, skip_special=True, seed=req.seed)
    x = units.read_tokens(store, meta["run_id"].tolist(), meta["pos"].to_numpy(), [req.layer])[0]
    if x.shape[1] != sae.d_in:
        raise LayerScopeError(f"The dictionary reads {sae.d_in} dims; layer has {x.shape[1]}.")
    idx, val = sae.encode_topk(x)
    on = val > 0
    density = np.bincount(idx[on], minlength=sae.d_sae) / len(x)
    max_act = np.zeros(sae.d_sae, dtype=np.float32)
    np.maximum.at(max_act, idx[on], val[on])
    table = pd.DataFrame({"latent": np.arange(sae.d_sae), "density": density, "max_act": max_act})

    # label association on each prompt's last (non-special) token, every prompt (unsampled)
    every = units.token_table(store, runs, skip_special=True, max_units=1 << 62)
    last = every.loc[last_rows(every)]
    labels = runs.set_index("run_id").loc[last["run_id"], "label"].to_numpy(dtype=object)
    x_last = store.rows(last["run_id"].tolist(), last["pos"].to_numpy(), req.layer)
    has = pd.notna(labels)
    z_last = sae.encode(x_last[has])
    labels = labels[has].astype(str)
    last_runs = last["run_id"].to_numpy()[has]
    classes = sorted(set(labels))
    if len(classes) >= 2:
        stack = np.stack([auroc_matrix(z_last, labels == c) for c in classes])
        best = np.nanargmax(np.nan_to_num(stack, nan=-1), axis=0)
        table["auroc"] = stack[best, np.arange(sae.d_sae)]
        table["auroc_label"] = np.asarray(classes, dtype=object)[best]
    else:
        table["auroc"] = np.nan
        table["auroc_label"] = None
    by = req.sort if not (req.sort == "auroc" and len(classes) < 2) else "density"
    table = table.sort_values([by, "latent"], ascending=[False, True], kind="stable")
    table = table.reset_index(drop=True)

    f = int(table["latent"].iloc[0]) if req.feature is None else req.feature
    if f >= sae.d_sae:
        raise LayerScopeError(f"Feature {f} does not exist: this dictionary has {sae.d_sae}.")
    info = {**d.summary(), "n_browsed_tokens": len(x), "sorted_by": by}
    return Result(
        request=req,
        info=info,
        table=table,
        detail=_detail(req, sae, f, idx, val, meta, z_last, labels, classes, lm),
        notice=units.notice_of(meta),
        sparse_probe=_sparse_probe(req, d, z_last, labels, last_runs),
    )


def _sparse_probe(req: Request, d, z, labels, run_ids) -> dict | None:
    """The k latents chosen by AUROC on the dictionary's training prompts, probed by grouped
    cross-validation on its held-out prompts (an imported dictionary: the seed's split)."""
    from backend.analysis.features import sparse_probe

    if req.probe_k == 0:
        return None
    held = d.info.get("heldout_runs")
    if not held or d.info.get("set") != req.set_name:
        held = dictionaries.split_runs(sorted(set(run_ids)), req.seed)[1]
    ev = np.isin(run_ids, held)
    if len(set(labels)) < 2 or len(set(labels[~ev])) < 2 or len(set(labels[ev])) < 2:
        return {"skipped": "the set needs two labels among both the training and held-out prompts"}
    try:
        k = min(req.probe_k, z.shape[1])
        sp = sparse_probe(z[~ev], labels[~ev], z[ev], labels[ev], run_ids[ev], k, seed=req.seed)
    except ValueError as e:
        return {"skipped": str(e)}
    return sp.to_dict()


def _detail(req, sae, f, idx, val, meta, z_last, labels, classes, lm) -> Detail:
    act = (val * (idx == f)).sum(1)  # each token's activation of f (0 when not selected)
    nz = act[act > 0]
    counts, edges = np.histogram(nz if len(nz) else np.zeros(1), bins=req.bins)
    order = np.argsort(-act, kind="stable")[: req.top]
    order = order[act[order] > 0]
    ctx = meta.iloc[order][["run_id", "pos", "token", "text", "label"]].reset_index(drop=True)
    ctx.insert(3, "activation", act[order].astype(float))
    toks = meta.groupby("run_id", sort=False).apply(
        lambda g: dict(zip(g["pos"], g["token"])), include_groups=False
    )
    ctx["tokens"] = [toks[r] for r in ctx["run_id"]]
    assoc = {}
    if len(classes) >= 2:
        for c in classes:
            a = bootstrap_auroc(z_last[:, f], labels == c, seed=req.seed)
            assoc[str(c)] = tuple(round(v, 4) for v in a)
    top, bottom = logit_effects(lm, sae.W_dec[f]) if lm is not None else ([], [])
    return Detail(
        feature=f,
        density=float((act > 0).mean()),
        max_act=float(act.max()),
        contexts=ctx,
        hist_counts=counts,
        hist_edges=edges,
        auroc=assoc,
        decoder_row=sae.W_dec[f].copy(),
        logit_top=top,
        logit_bottom=bottom,
    )


def logit_effects(lm, direction: np.ndarray, n: int = 10) -> tuple[list, list]:
    """The direct-path effect of adding ``direction`` to the residual on each next-token
    logit: W_U (γ ⊙ d), γ the final norm's weight (its normalisation and bias ignored)."""
    import torch

    if not lm.info.has_lm_head or lm.unembed is None:
        return [], []
    with torch.no_grad():
        w = lm.unembed.weight
        v = torch.as_tensor(direction, dtype=w.dtype, device=w.device)
        gamma = getattr(lm.final_norm, "weight", None)
        if gamma is not None:
            v = v * gamma
        eff = (w @ v).float().cpu().numpy()
    hi, lo = np.argsort(-eff)[:n], np.argsort(eff)[:n]
    names = lm.tokenizer.batch_decode([[int(i)] for i in np.r_[hi, lo]])
    pairs = [(t, round(float(e), 4)) for t, e in zip(names, eff[np.r_[hi, lo]])]
    return pairs[:n], pairs[n:]


def token_features(
    store: Store, run_id: str, set_name: str | None, layer: int, top: int = 3
) -> pd.DataFrame | None:
    """The ``top`` features of each token of one run at ``layer`` (the Prompt page), from the
    dictionary trained on ``set_name`` with the default settings, else the imported one; None
    when the layer has neither."""
    run = store.get_run(run_id)
    if run is None:
        raise LayerScopeError(f"No run '{run_id}' in the cache.")
    d = dictionaries.load(store, run["model_id"], layer, set_name) if set_name else None
    d = d or dictionaries.load(store, run["model_id"], layer, None)
    if d is None:
        return None
    toks = store.tokens(run_id)
    x = store.rows([run_id] * len(toks), toks["pos"].to_numpy(), layer)
    idx, val = d.sae.encode_topk(x)
    order = np.argsort(-val, axis=1)[:, :top]
    feats = [
        ", ".join(f"{int(idx[i, j])} ({val[i, j]:.2f})" for j in order[i] if val[i, j] > 0)
        for i in range(len(toks))
    ]
    return pd.DataFrame(
        {"pos": toks["pos"], "token": toks["token"], "top features (activation)": feats}
    )


def unit_activations(
    store: Store, model_id: str, set_name: str | None, meta: pd.DataFrame, layer: int, feature: int
) -> np.ndarray:
    """Each unit's activation of ``feature`` at ``layer`` at its (run_id, pos) (a prompt unit:
    the token it is shown at), from the dictionary of ``dictionaries.feature_direction`` (the
    default settings trained on ``set_name``, else the imported one). Trajectories' colouring."""
    dictionaries.feature_direction(store, model_id, layer, set_name, feature)  # or one message
    d = dictionaries.load(store, model_id, layer, set_name) if set_name else None
    sae = (d or dictionaries.load(store, model_id, layer, None)).sae
    x = store.rows(meta["run_id"].tolist(), meta["pos"].to_numpy(), layer)
    idx, val = sae.encode_topk(x)
    return (val * (idx == feature)).sum(1).astype(np.float64)
