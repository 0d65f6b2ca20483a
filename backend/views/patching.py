"""The Patching view: how much of the clean behaviour returns when one residual-stream cell
(layer, position) of the clean run is copied into the corrupted run.

``compute(store, Request) -> Result`` (runs the model, unless the store's derived cache holds
the answer) and ``cached(store, Request) -> Result | None`` (never loads a model: a page opened
from a link shows a stored result at once and computes only on click). Shared by the Patching
page and the `patching` CLI (alias `patch`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from backend.errors import LayerScopeError
from backend.store import Store

VERSION = 4  #: bump when the computation changes what a stored result means
CACHE_KIND = "patching"


METRICS = ("logit-diff", "prob")
MIN_PAIRS = 2


@dataclass(frozen=True)
class Request:
    model: str  #: reference as the user knows it ("demo", a hub id, a path)
    clean: str
    corrupted: str
    answer: str | None = None  #: default: the clean run's top-1 next token
    against: str | None = None  #: default: the corrupted run's top-1 next token
    layers: tuple[int, ...] | None = None  #: default: 0..n_layers (1..n_layers for attn / mlp)
    positions: tuple[int, ...] | None = None  #: default: every position
    top_k: int = 5
    dtype: str = "auto"
    device: str = "cpu"
    metric: str = "logit-diff"  #: "logit-diff" = logit(answer) - logit(against); "prob" = p(answer)
    component: str = "resid"  #: "resid" | "attn" | "mlp": what is copied at (layer, position)
    set_name: str | None = None  #: with ``pairs``: a bundled set whose minimal pairs to average
    pairs: bool = False  #: mean over the set's pairs aligned with the typed one
    n_boot: int = 1000  #: bootstrap resamples of pairs for the interval
    seed: int = 0

    def __post_init__(self):
        if not self.clean.strip() or not self.corrupted.strip():
            raise LayerScopeError("Type both a clean and a corrupted prompt.")
        if self.top_k < 1:
            raise LayerScopeError("--top must be at least 1.")
        if self.metric not in METRICS:
            raise LayerScopeError(f"Unknown metric '{self.metric}': use logit-diff or prob.")
        if self.component not in ("resid", "attn", "mlp"):
            raise LayerScopeError(f"Unknown component '{self.component}': use resid, attn or mlp.")
        if self.pairs and not self.set_name:
            raise LayerScopeError("--pairs needs a set with minimal pairs (--set agreement).")
        if self.n_boot < 0:
            raise LayerScopeError("--n-boot must be 0 or more.")
        for name in ("answer", "against"):
            v = getattr(self, name)
            if v is not None and not v.strip():
                object.__setattr__(self, name, None)


@dataclass(frozen=True)
class Result:
    """One pair's map, or (``pairs``) the mean over aligned minimal pairs: then the metrics and
    ``patched`` are means over the pairs, ``recovery`` the mean of each pair's recovery (with
    a bootstrap interval over pairs), and the tokens, answer and top tokens the typed pair's.

    With pairs and the logit-diff metric, each pair's metric is signed towards *that pair's*
    clean answer (``pair_signs``: +1 where the clean prompt prefers ``answer``, -1 where it
    prefers ``against``): with a fixed --answer/--against, a pair whose clean prompt is the
    other form would otherwise enter the means with its sign flipped. Recovery (normalised
    per pair) does not depend on the sign."""

    request: Request
    layers: list[int]
    positions: list[int]
    tokens: list[str]  #: the clean prompt's tokens (every position)
    corrupted_tokens: list[str]
    answer: str
    against: str
    clean_metric: float  #: the metric after the clean prompt
    corrupted_metric: float
    patched: np.ndarray  #: (n_layers_sel, n_positions_sel) metric with that cell patched
    top_tokens: list  #: [layer][position][k] text of the patched top-k next tokens
    top_probs: np.ndarray  #: (n_layers_sel, n_positions_sel, k)
    clean_source: str  #: "computed": a forward pass in the model's precision (never the store's)
    metric: str = "logit-diff"
    component: str = "resid"
    pair_recovery: np.ndarray | None = None  #: (n_pairs, n_layers_sel, n_positions_sel)
    pair_texts: list | None = None  #: [(clean, corrupted)] of the pairs averaged
    pair_metrics: list | None = None  #: [(clean, corrupted)] metric of each pair
    n_skipped: int = 0  #: aligned pairs left out: same answer and against, or nothing to recover
    pair_signs: list | None = None  #: per pair +1 / -1: the sign that orients its metric
    small_gap: float | None = None  #: the threshold |clean - corrupted| is under, if it is
    warning: str | None = None  #: recovery ill-conditioned (see ``small_gap``), in words
    from_cache: bool = field(default=False, compare=False)

    @property
    def recovery(self) -> np.ndarray:
        """(patched - corrupted) / (clean - corrupted): 0 = corrupted behaviour, 1 = clean."""
        if self.pair_recovery is not None:
            return self.pair_recovery.mean(0)
        return (self.patched - self.corrupted_metric) / (self.clean_metric - self.corrupted_metric)

    @property
    def n_pairs(self) -> int:
        return 1 if self.pair_recovery is None else len(self.pair_recovery)

    def interval(self):
        """``analysis.patching.PairMean`` of the recovery over pairs (seeded), or None."""
        if self.pair_recovery is None:
            return None
        from backend.analysis.patching import pair_interval

        return pair_interval(self.pair_recovery, self.request.n_boot, self.request.seed)

    @property
    def metric_label(self) -> str:
        if self.metric == "prob":
            return f"p({self.answer!r})"
        if self.pair_signs is not None and min(self.pair_signs) < 0:
            return (f"logit(pair's clean answer) - logit(the other of {self.answer!r}, "
                    f"{self.against!r})")  # fmt: skip
        return f"logit({self.answer!r}) - logit({self.against!r})"

    def to_frame(self) -> pd.DataFrame:
        rec = self.recovery
        iv = self.interval()
        return pd.DataFrame(
            [
                {
                    "layer": layer,
                    "pos": p,
                    "token": self.tokens[p],
                    "corrupted_token": self.corrupted_tokens[p],
                    "recovery": rec[li, pi],
                    **(
                        {}
                        if iv is None
                        else {"recovery_lo": iv.lo[li, pi], "recovery_hi": iv.hi[li, pi]}
                    ),
                    "metric": self.patched[li, pi],
                    "top1": self.top_tokens[li][pi][0],
                    "p_top1": self.top_probs[li, pi, 0],
                }
                for li, layer in enumerate(self.layers)
                for pi, p in enumerate(self.positions)
            ]
        )

    def to_dict(self) -> dict:
        d = {
            "layers": list(self.layers),
            "positions": list(self.positions),
            "tokens": list(self.tokens),
            "corrupted_tokens": list(self.corrupted_tokens),
            "metric": self.metric,
            "component": self.component,
            "answer": self.answer,
            "against": self.against,
            "clean_metric": round(self.clean_metric, 6),
            "corrupted_metric": round(self.corrupted_metric, 6),
            "recovery": self.recovery.round(6).tolist(),
            "patched_metric": self.patched.round(6).tolist(),
            "top_tokens": self.top_tokens,
            "top_probs": self.top_probs.round(4).tolist(),
            "clean_source": self.clean_source,
            **({"warning": self.warning} if self.warning else {}),
        }
        iv = self.interval()
        if iv is not None:
            d |= {
                "n_pairs": iv.n_pairs,
                "recovery_lo": iv.lo.round(6).tolist(),
                "recovery_hi": iv.hi.round(6).tolist(),
                "interval": iv.description,
                "pairs": [list(p) for p in self.pair_texts],
                "pair_metrics": [[round(a, 6), round(b, 6)] for a, b in self.pair_metrics],
                "pair_signs": list(self.pair_signs or []),
                "metric_label": self.metric_label,
                "pairs_skipped": self.n_skipped,
            }
        return d

    # the derived cache's payload: everything, at full precision
    def _payload(self) -> bytes:
        d = self.to_dict() | {
            "clean_metric": self.clean_metric,
            "corrupted_metric": self.corrupted_metric,
            "patched_metric": self.patched.tolist(),
            "top_probs": self.top_probs.tolist(),
        }
        if self.pair_recovery is not None:
            d |= {"pair_recovery": self.pair_recovery.tolist(),
                  "pair_metrics": [list(m) for m in self.pair_metrics]}  # fmt: skip
        return json.dumps(d).encode()

    @classmethod
    def _from_payload(cls, req: Request, raw: bytes) -> Result:
        d = json.loads(raw)
        pr = d.get("pair_recovery")
        return cls(
            request=req,
            layers=d["layers"],
            positions=d["positions"],
            tokens=d["tokens"],
            corrupted_tokens=d["corrupted_tokens"],
            answer=d["answer"],
            against=d["against"],
            clean_metric=float(d["clean_metric"]),
            corrupted_metric=float(d["corrupted_metric"]),
            patched=np.asarray(d["patched_metric"], dtype=np.float64),
            top_tokens=d["top_tokens"],
            top_probs=np.asarray(d["top_probs"], dtype=np.float32),
            clean_source=d["clean_source"],
            metric=d.get("metric", "logit-diff"),
            component=d.get("component", "resid"),
            pair_recovery=None if pr is None else np.asarray(pr, dtype=np.float64),
            pair_texts=[tuple(p) for p in d["pairs"]] if pr is not None else None,
            pair_metrics=[tuple(m) for m in d["pair_metrics"]] if pr is not None else None,
            n_skipped=int(d.get("pairs_skipped", 0)),
            pair_signs=d.get("pair_signs") if pr is not None else None,
            warning=d.get("warning"),
            from_cache=True,
        )


@dataclass(frozen=True)
class CellDistribution:
    """The next-token distribution of the corrupted prompt with one cell patched, next to the
    clean and corrupted runs' own: the patched top-k, plus each run's top-1 if not among them."""

    layer: int
    position: int
    component: str
    tokens: list[str]
    patched: np.ndarray  #: (n,) probabilities, descending
    clean: np.ndarray  #: (n,) the same tokens after the clean prompt
    corrupted: np.ndarray  #: (n,) ... and after the corrupted prompt

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"token": self.tokens, "patched": self.patched,
                             "clean": self.clean, "corrupted": self.corrupted})  # fmt: skip


def cache_key(req: Request) -> str:
    """sha256 of every input, the model's fingerprint included (resolving a model reads its
    files' metadata; it loads nothing)."""
    from backend import models

    model_id = models.resolve(req.model).model_id
    parts = [
        VERSION,
        model_id,
        req.dtype,
        req.device,
        req.clean,
        req.corrupted,
        req.answer,
        req.against,
        list(req.layers) if req.layers is not None else None,
        list(req.positions) if req.positions is not None else None,
        req.top_k,
        req.metric,
        req.component,
    ]
    if req.pairs:  # the pairs themselves, so an edited set is a new key
        parts += [req.set_name, req.n_boot, req.seed, set_pairs(req.set_name)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def paired_sets() -> list[str]:
    """The bundled sets that have minimal pairs."""
    from backend.demo.sets import DEMO_SETS, load_pairs

    return [n for n in DEMO_SETS if load_pairs(n)]


def set_pairs(set_name: str) -> list[tuple[str, str]]:
    """The (clean, corrupted) minimal pairs of a bundled set (its ``pair`` column)."""
    from backend.demo.sets import load_pairs

    pairs = load_pairs(set_name)
    if not pairs:
        raise LayerScopeError(
            f"The set '{set_name}' has no minimal pairs; the bundled sets with a pair column "
            f"are: {', '.join(paired_sets())}."
        )
    return [(a, b) for a, b in pairs]


def cached(store: Store, req: Request) -> Result | None:
    """The stored result of this exact request, or None; never loads a model."""
    raw = store.cache_get(CACHE_KIND, cache_key(req))
    return Result._from_payload(req, raw) if raw is not None else None


def token_id(tokenizer, text: str) -> int:
    """The id of one next token typed by the user: " is" (word after a space) first, then the
    text as typed, then the exact vocabulary entry; more than one token is an error."""
    for s in (" " + text.strip(), text):
        ids = tokenizer.encode(s, add_special_tokens=False)
        if len(ids) == 1:
            return int(ids[0])
    tid = tokenizer.convert_tokens_to_ids(text)
    if tid is not None and tid != tokenizer.unk_token_id:
        return int(tid)
    raise LayerScopeError(
        f"'{text}' is not a single token for this tokenizer; give one token as the answer."
    )


def _cells(req: Request, n_layers: int, n_tokens: int) -> tuple[list[int], list[int]]:
    low = 0 if req.component == "resid" else 1  # attn / mlp outputs exist from block 1 on
    layers = list(range(low, n_layers + 1)) if req.layers is None else sorted(set(req.layers))
    positions = list(range(n_tokens)) if req.positions is None else sorted(set(req.positions))
    bad_l = [x for x in layers if not low <= x <= n_layers]
    if bad_l:
        what = "the model has" if req.component == "resid" else f"{req.component} outputs exist at"
        raise LayerScopeError(f"Layer {bad_l[0]} does not exist: {what} {low}..{n_layers}.")
    bad_p = [p for p in positions if not 0 <= p < n_tokens]
    if bad_p:
        raise LayerScopeError(
            f"Position {bad_p[0]} does not exist: the prompts have {n_tokens} tokens "
            f"(0..{n_tokens - 1})."
        )
    if not layers or not positions:
        raise LayerScopeError("Pick at least one layer and one position to patch.")
    return layers, positions


def compute(store: Store, req: Request, lm=None, use_cache: bool = True) -> Result:
    """Patch every (layer, position) cell of the request (for one pair, or for each of the
    set's aligned pairs); answer from the store's derived cache when it holds this request,
    and store the result there."""
    key = cache_key(req)
    if use_cache:
        raw = store.cache_get(CACHE_KIND, key)
        if raw is not None:
            return Result._from_payload(req, raw)
    res = _compute(store, req, lm)
    store.cache_put(CACHE_KIND, key, res._payload())
    return res


def _model(req: Request, lm):
    from backend import models

    if lm is None:
        lm = models.get_model(req.model, req.dtype, req.device)
    if not lm.info.has_lm_head or lm.unembed is None:
        raise LayerScopeError(
            f"Patching reads the next-token logits; {lm.info.ref} has no language-model head."
        )
    return lm


def _tokenize_pair(lm, clean: str, corrupted: str):
    from backend import models
    from backend.capture import extract

    limit = models.max_positions(lm.model.config.to_dict())
    clean_tk, corr_tk = extract.tokenize(lm.tokenizer, [clean, corrupted], limit)
    if len(clean_tk.ids) != len(corr_tk.ids) or clean_tk.truncated or corr_tk.truncated:
        raise LayerScopeError(
            f"The clean prompt has {clean_tk.n_full} tokens and the corrupted one "
            f"{corr_tk.n_full}; patching needs the same number of tokens"
            + (f" (at most {limit})." if clean_tk.truncated or corr_tk.truncated else ".")
        )
    return list(clean_tk.ids), list(corr_tk.ids)


def _clean_values(store: Store, lm, req: Request, clean: str, clean_ids):
    """(values (n_layers + 1, T, d) to copy from, last-position clean logits, source).

    Always a forward pass of the clean prompt in the model's own precision, like the patched
    forwards: the store's fp16 copy of the run would make the clean reference (and so every
    recovery) depend on whether the prompt happened to be extracted."""
    from backend.capture import patching as P

    if req.component != "resid":
        values = P.component_outputs(lm, clean_ids, req.component)
        _, _, last = P.run_plain(lm, clean_ids)
        return values, last, "computed"
    states, _, last = P.run_plain(lm, clean_ids)
    return states, last, "computed"


#: recovery = (patched - corrupted) / (clean - corrupted) is ill-conditioned below these:
#: logit-diff, a share of the clean logits' spread (SD over the vocabulary) or an absolute
#: floor in logits; prob, an absolute floor in probability
SMALL_SHARE, SMALL_LOGIT, SMALL_PROB = 0.05, 0.05, 0.01


def small_gap(metric: str, clean_m: float, corr_m: float, logits_sd: float) -> float | None:
    """The threshold |clean - corrupted| falls under (recovery means little), or None."""
    gap = abs(clean_m - corr_m)
    limit = SMALL_PROB if metric == "prob" else max(SMALL_SHARE * logits_sd, SMALL_LOGIT)
    return limit if gap < limit else None


def _warning(res: Result, pairs: list[Result] | None = None) -> str | None:
    if pairs is None:
        if res.small_gap is None:
            return None
        return (
            f"The clean and corrupted metrics differ by only "
            f"{abs(res.clean_metric - res.corrupted_metric):.4g} (under {res.small_gap:.3g}, "
            + ("a probability floor" if res.metric == "prob" else
               f"{SMALL_SHARE:.0%} of the clean logits' spread or {SMALL_LOGIT} logits")
            + "): recovery divides by that difference, so its values mean little here."
        )  # fmt: skip
    bad = [r for r in pairs if r.small_gap is not None]
    if not bad:
        return None
    return (
        f"{len(bad)} of {len(pairs)} pairs have clean and corrupted metrics closer than the "
        "recovery needs (under 5% of the clean logits' spread or an absolute floor): their "
        "recoveries are ill-conditioned and weigh on the mean."
    )


def _one(store: Store, req: Request, lm, clean: str, corrupted: str, ids=None) -> Result:
    """One pair's map (``clean`` / ``corrupted`` may be a set's pair, not the typed one)."""
    from backend.capture import extract
    from backend.capture import patching as P
    from backend.views.lens import decode

    clean_ids, corr_ids = ids or _tokenize_pair(lm, clean, corrupted)
    layers, positions = _cells(req, lm.info.n_layers, len(clean_ids))
    values, clean_last, clean_source = _clean_values(store, lm, req, clean, clean_ids)
    corr_states, corr_outputs, corr_last = P.run_plain(lm, corr_ids)
    if req.component != "resid":
        corr_states = P.component_outputs(lm, corr_ids, req.component)

    tok = lm.tokenizer
    answer = token_id(tok, req.answer) if req.answer else int(clean_last.float().argmax())
    against = token_id(tok, req.against) if req.against else int(corr_last.float().argmax())
    names = decode(lm, [answer, against])
    if answer == against and req.metric == "logit-diff":
        raise LayerScopeError(
            f"The answer and the against token are the same ({names[answer]!r}): the clean and "
            "corrupted prompts have the same top-1 next token; name two tokens "
            "(--answer and --against)."
        )
    ro_clean = P.readout(clean_last[None], answer, against, req.top_k)
    ro_corr = P.readout(corr_last[None], answer, against, req.top_k)
    pick = (lambda ro: ro.prob) if req.metric == "prob" else (lambda ro: ro.metric)
    clean_m, corr_m = float(pick(ro_clean)[0]), float(pick(ro_corr)[0])
    if abs(clean_m - corr_m) < 1e-6:
        what = f"p({names[answer]!r})" if req.metric == "prob" else (
            f"logit({names[answer]!r}) - logit({names[against]!r})")  # fmt: skip
        raise LayerScopeError(
            f"The metric {what} is the same after both prompts ({clean_m:.4f}): nothing to recover."
        )
    gap = small_gap(req.metric, clean_m, corr_m, float(clean_last.float().std()))
    cells = [(layer, p) for layer in layers for p in positions]
    ro = P.patch_cells(lm, corr_ids, values, cells, answer, against, req.top_k,
                       corrupted_outputs=corr_outputs, component=req.component,
                       corrupted_values=corr_states, corrupted_logits=corr_last)  # fmt: skip
    nl, npos, k = len(layers), len(positions), ro.top_ids.shape[1]
    names = decode(lm, ro.top_ids)
    top_tokens = [
        [[names[int(i)] for i in ro.top_ids[li * npos + pi]] for pi in range(npos)]
        for li in range(nl)
    ]
    return Result(
        request=req,
        layers=layers,
        positions=positions,
        tokens=extract.decode_tokens(tok, clean_ids),
        corrupted_tokens=extract.decode_tokens(tok, corr_ids),
        answer=decode(lm, [answer])[answer],
        against=decode(lm, [against])[against],
        clean_metric=clean_m,
        corrupted_metric=corr_m,
        patched=pick(ro).reshape(nl, npos),
        top_tokens=top_tokens,
        top_probs=ro.top_probs.reshape(nl, npos, k),
        clean_source=clean_source,
        metric=req.metric,
        component=req.component,
        small_gap=gap,
    )


def _differs(a, b) -> tuple[int, ...]:
    return tuple(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


def _compute(store: Store, req: Request, lm) -> Result:
    lm = _model(req, lm)
    typed_ids = _tokenize_pair(lm, req.clean, req.corrupted)
    first = _one(store, req, lm, req.clean, req.corrupted, typed_ids)
    if not req.pairs:
        return replace(first, warning=_warning(first))
    # the set's pairs aligned with the typed one: same token count, same differing positions
    shape = (len(typed_ids[0]), _differs(*typed_ids))
    results, texts, skipped = [first], [(req.clean, req.corrupted)], 0
    for clean, corrupted in set_pairs(req.set_name):
        if (clean, corrupted) == (req.clean, req.corrupted):
            continue
        try:
            ids = _tokenize_pair(lm, clean, corrupted)
        except LayerScopeError:
            continue
        if (len(ids[0]), _differs(*ids)) != shape:
            continue
        try:
            results.append(_one(store, req, lm, clean, corrupted, ids))
        except LayerScopeError:  # same top-1 token or nothing to recover in this pair
            skipped += 1
            continue
        texts.append((clean, corrupted))
    if len(results) < MIN_PAIRS:
        raise LayerScopeError(
            f"No pair of the set '{req.set_name}' lines up with the typed one (same number of "
            f"tokens, {shape[0]}, and the same differing positions, {list(shape[1])}); type a "
            "pair shaped like the set's, e.g. 'the cat near the dogs often' / 'the cats near "
            "the dog often' for agreement."
        )
    # logit-diff: each pair signed towards its own clean answer (a probability is not signed)
    signs = [1 if req.metric == "prob" or r.clean_metric >= 0 else -1 for r in results]
    return Result(
        **{k: getattr(first, k) for k in ("request", "layers", "positions", "tokens",
                                          "corrupted_tokens", "answer", "against", "top_tokens",
                                          "top_probs", "clean_source", "metric", "component")},
        clean_metric=float(np.mean([s * r.clean_metric for s, r in zip(signs, results)])),
        corrupted_metric=float(np.mean([s * r.corrupted_metric for s, r in zip(signs, results)])),
        patched=np.mean([s * r.patched for s, r in zip(signs, results)], axis=0),
        pair_recovery=np.stack([r.recovery for r in results]),
        pair_texts=texts,
        pair_metrics=[(s * r.clean_metric, s * r.corrupted_metric)
                      for s, r in zip(signs, results)],
        n_skipped=skipped,
        pair_signs=signs,
        warning=_warning(first, results),
    )  # fmt: skip


def cell_distribution(
    store: Store | None, req: Request, layer: int, position: int, k: int = 10, lm=None
) -> CellDistribution:
    """The typed pair's corrupted prompt with the one cell (layer, position) patched: its
    next-token distribution (top ``k``) against the clean and corrupted runs'. One forward
    pass (plus the clean and corrupted ones): computed on a click, not for every cell."""
    from backend.capture import patching as P
    from backend.views.lens import decode

    lm = _model(req, lm)
    clean_ids, corr_ids = _tokenize_pair(lm, req.clean, req.corrupted)
    _cells(replace(req, layers=(layer,), positions=(position,)), lm.info.n_layers, len(clean_ids))
    values, clean_last, _ = _clean_values(store, lm, req, req.clean, clean_ids)
    _, _, corr_last = P.run_plain(lm, corr_ids)
    patched = P.cell_logits(lm, corr_ids, values, layer, position, req.component)
    probs = [x.float().softmax(-1).cpu().numpy() for x in (patched, clean_last, corr_last)]
    ids = list(np.argsort(-probs[0])[:k])
    for p in probs[1:]:
        if int(p.argmax()) not in ids:
            ids.append(int(p.argmax()))
    ids = sorted(ids, key=lambda i: -probs[0][i])
    names = decode(lm, ids)
    return CellDistribution(
        layer=layer,
        position=position,
        component=req.component,
        tokens=[names[int(i)] for i in ids],
        patched=probs[0][ids].astype(np.float64),
        clean=probs[1][ids].astype(np.float64),
        corrupted=probs[2][ids].astype(np.float64),
    )
