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
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from backend import derived
from backend.errors import LayerScopeError
from backend.store import Store

VERSION = 4  #: bump when the computation changes what a stored result means
CACHE_KIND = "patching"


METRICS = ("logit-diff", "prob")
METHODS = ("exact", "atp")  #: one forward per cell, or attribution patching (gradient × difference)
MIN_PAIRS = 2


@dataclass(frozen=True, kw_only=True)
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
    #: component "feature": latent F of the layer's dictionary (trained on ``set_name``, else
    #: the imported one) is ablated in the clean run at each position, the error term kept
    feature: int | None = None
    set_name: str | None = None  #: with ``pairs``: a bundled set whose minimal pairs to average
    pairs: bool = False  #: mean over the set's pairs aligned with the typed one
    n_boot: int = 1000  #: bootstrap resamples of pairs for the interval
    seed: int = 0
    method: str = "exact"  #: "exact" | "atp": every cell estimated from one backward pass
    verify: int = 0  #: with "atp": patch the top-N cells by |AtP| exactly (the typed pair)

    def __post_init__(self):
        if not self.clean.strip() or not self.corrupted.strip():
            raise LayerScopeError("Type both a clean and a corrupted prompt.")
        if self.top_k < 1:
            raise LayerScopeError("--top must be at least 1.")
        if self.metric not in METRICS:
            raise LayerScopeError(f"Unknown metric '{self.metric}': use logit-diff or prob.")
        if self.component not in ("resid", "attn", "mlp", "feature"):
            raise LayerScopeError(
                f"Unknown component '{self.component}': use resid, attn, mlp or feature."
            )
        if self.component == "feature" and (
            self.feature is None or self.feature < 0 or len(self.layers or ()) != 1
        ):
            raise LayerScopeError(
                "--component feature needs --feature F (>= 0) and one --layers L."
            )
        if self.component == "feature" and self.method != "exact":
            raise LayerScopeError("Feature ablation is computed exactly (no --method atp).")
        if self.pairs and not self.set_name:
            raise LayerScopeError("--pairs needs a set with minimal pairs (--set agreement).")
        if self.n_boot < 0:
            raise LayerScopeError("--n-boot must be 0 or more.")
        if self.method not in METHODS:
            raise LayerScopeError(f"Unknown method '{self.method}': use exact or atp.")
        if self.verify < 0 or (self.verify and self.method != "atp"):
            raise LayerScopeError(
                "--verify N (0 or more) checks AtP's top cells: use --method atp."
            )
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
    method: str = "exact"  #: "atp": ``patched`` is the first-order estimate, no top tokens
    #: ``verify``: {n, spearman, cells [[layer, pos]], atp, exact (recoveries)} of the top cells
    agreement: dict | None = None
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
                    "top1": self.top_tokens[li][pi][0] if self.top_tokens[li][pi] else None,
                    "p_top1": self.top_probs[li, pi, 0] if self.top_probs.shape[-1] else None,
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
            "method": self.method,
            **({"warning": self.warning} if self.warning else {}),
        }
        if self.agreement is not None:
            d["agreement"] = self.agreement
        if self.component == "feature":  # the metric with latent F ablated, minus the clean one
            d |= {"feature": self.request.feature,
                  "effect": (self.patched - self.clean_metric).round(6).tolist()}  # fmt: skip
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
            method=d.get("method", "exact"),
            agreement=d.get("agreement"),
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
    if req.method != "exact":  # exact keys stay what they were
        parts.append(req.method)
    if req.verify:
        parts.append(["verify", req.verify])
    if req.component == "feature":
        parts += [req.feature, req.set_name]
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
    if not derived.may_hold(store, req.model):
        return None
    return derived.load(store, CACHE_KIND, cache_key(req), lambda b: Result._from_payload(req, b))


def token_id(tokenizer, text: str) -> int:
    """The id of one next token typed by the user: " is" (word after a space) first, then the
    text as typed, then the exact vocabulary entry; more than one token, or the unknown token
    (a word-level vocabulary maps any unknown word to it), is refused with the nearest tokens."""
    unk = tokenizer.unk_token_id
    for s in (" " + text.strip(), text):
        ids = tokenizer.encode(s, add_special_tokens=False)
        if len(ids) == 1 and (unk is None or ids[0] != unk):
            return int(ids[0])
    tid = tokenizer.convert_tokens_to_ids(text)
    if tid is not None and tid != unk:
        return int(tid)
    near = nearest_tokens(tokenizer, text)
    raise LayerScopeError(
        f"'{text}' is not one token of this model's vocabulary; give one token as the answer"
        + (f" (nearest: {', '.join(repr(t) for t in near)})." if near else ".")
    )


def nearest_tokens(tokenizer, text: str, n: int = 5) -> list[str]:
    """The vocabulary entries most like ``text`` (word markers Ġ / ▁ dropped), for a hint."""
    import difflib

    want = text.strip().lower()
    words = {
        w.lstrip("Ġ▁").lower(): w.lstrip("Ġ▁")
        for w in tokenizer.get_vocab()
        if w.lstrip("Ġ▁") and not w.startswith(("<", "["))
    }
    if len(words) > 20000 and want:  # large vocabularies: the words of similar length only
        words = {k: v for k, v in words.items() if abs(len(k) - len(want)) <= 2}
    return [words[k] for k in difflib.get_close_matches(want, list(words), n=n, cutoff=0.5)]


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
        hit = derived.load(store, CACHE_KIND, key, lambda b: Result._from_payload(req, b))
        if hit is not None:
            return hit
    res = compute_grid(store, req, lm)
    derived.save(store, CACHE_KIND, key, res._payload())
    return res


def compute_grid(store: Store, req: Request, lm) -> Result:
    from backend.views.patching_grid import _compute

    return _compute(store, req, lm)


def cell_distribution(*args, **kwargs) -> CellDistribution:
    """One patched forward's next-token distribution next to clean and corrupted (a click on
    a cell); see ``patching_grid.cell_distribution``."""
    from backend.views import patching_grid

    return patching_grid.cell_distribution(*args, **kwargs)
