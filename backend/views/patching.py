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

from backend.errors import LayerScopeError
from backend.store import Store

VERSION = 1  #: bump when the computation changes what a stored result means
CACHE_KIND = "patching"


@dataclass(frozen=True)
class Request:
    model: str  #: reference as the user knows it ("demo", a hub id, a path)
    clean: str
    corrupted: str
    answer: str | None = None  #: default: the clean run's top-1 next token
    against: str | None = None  #: default: the corrupted run's top-1 next token
    layers: tuple[int, ...] | None = None  #: default: 0..n_layers
    positions: tuple[int, ...] | None = None  #: default: every position
    top_k: int = 5
    dtype: str = "auto"
    device: str = "cpu"

    def __post_init__(self):
        if not self.clean.strip() or not self.corrupted.strip():
            raise LayerScopeError("Type both a clean and a corrupted prompt.")
        if self.top_k < 1:
            raise LayerScopeError("--top must be at least 1.")
        for name in ("answer", "against"):
            v = getattr(self, name)
            if v is not None and not v.strip():
                object.__setattr__(self, name, None)


@dataclass(frozen=True)
class Result:
    request: Request
    layers: list[int]
    positions: list[int]
    tokens: list[str]  #: the clean prompt's tokens (every position)
    corrupted_tokens: list[str]
    answer: str
    against: str
    clean_metric: float  #: logit(answer) - logit(against) after the clean prompt
    corrupted_metric: float
    patched: np.ndarray  #: (n_layers_sel, n_positions_sel) metric with that cell patched
    top_tokens: list  #: [layer][position][k] text of the patched top-k next tokens
    top_probs: np.ndarray  #: (n_layers_sel, n_positions_sel, k)
    clean_source: str  #: "cache (fp16)" when the clean states came from the store, else "computed"
    from_cache: bool = field(default=False, compare=False)

    @property
    def recovery(self) -> np.ndarray:
        """(patched - corrupted) / (clean - corrupted): 0 = corrupted behaviour, 1 = clean."""
        return (self.patched - self.corrupted_metric) / (self.clean_metric - self.corrupted_metric)

    def to_frame(self) -> pd.DataFrame:
        rec = self.recovery
        return pd.DataFrame(
            [
                {
                    "layer": layer,
                    "pos": p,
                    "token": self.tokens[p],
                    "corrupted_token": self.corrupted_tokens[p],
                    "recovery": rec[li, pi],
                    "metric": self.patched[li, pi],
                    "top1": self.top_tokens[li][pi][0],
                    "p_top1": self.top_probs[li, pi, 0],
                }
                for li, layer in enumerate(self.layers)
                for pi, p in enumerate(self.positions)
            ]
        )

    def to_dict(self) -> dict:
        return {
            "layers": list(self.layers),
            "positions": list(self.positions),
            "tokens": list(self.tokens),
            "corrupted_tokens": list(self.corrupted_tokens),
            "answer": self.answer,
            "against": self.against,
            "clean_metric": round(self.clean_metric, 6),
            "corrupted_metric": round(self.corrupted_metric, 6),
            "recovery": self.recovery.round(6).tolist(),
            "patched_metric": self.patched.round(6).tolist(),
            "top_tokens": self.top_tokens,
            "top_probs": self.top_probs.round(4).tolist(),
            "clean_source": self.clean_source,
        }

    # the derived cache's payload: everything, at full precision
    def _payload(self) -> bytes:
        d = self.to_dict() | {
            "clean_metric": self.clean_metric,
            "corrupted_metric": self.corrupted_metric,
            "patched_metric": self.patched.tolist(),
            "top_probs": self.top_probs.tolist(),
        }
        return json.dumps(d).encode()

    @classmethod
    def _from_payload(cls, req: Request, raw: bytes) -> Result:
        d = json.loads(raw)
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
            from_cache=True,
        )


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
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


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
    layers = list(range(n_layers + 1)) if req.layers is None else sorted(set(req.layers))
    positions = list(range(n_tokens)) if req.positions is None else sorted(set(req.positions))
    bad_l = [x for x in layers if not 0 <= x <= n_layers]
    if bad_l:
        raise LayerScopeError(f"Layer {bad_l[0]} does not exist: the model has 0..{n_layers}.")
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
    """Patch every (layer, position) cell of the request; answer from the store's derived
    cache when it holds this request, and store the result there."""
    key = cache_key(req)
    if use_cache:
        raw = store.cache_get(CACHE_KIND, key)
        if raw is not None:
            return Result._from_payload(req, raw)
    res = _compute(store, req, lm)
    store.cache_put(CACHE_KIND, key, res._payload())
    return res


def _compute(store: Store, req: Request, lm) -> Result:
    import torch

    from backend import models
    from backend.capture import extract
    from backend.capture import patching as P
    from backend.views.lens import decode

    if lm is None:
        lm = models.get_model(req.model, req.dtype, req.device)
    if not lm.info.has_lm_head or lm.unembed is None:
        raise LayerScopeError(
            f"Patching reads the next-token logits; {lm.info.ref} has no language-model head."
        )
    limit = models.max_positions(lm.model.config.to_dict())
    clean_tk, corr_tk = extract.tokenize(lm.tokenizer, [req.clean, req.corrupted], limit)
    if len(clean_tk.ids) != len(corr_tk.ids) or clean_tk.truncated or corr_tk.truncated:
        raise LayerScopeError(
            f"The clean prompt has {clean_tk.n_full} tokens and the corrupted one "
            f"{corr_tk.n_full}; patching needs the same number of tokens"
            + (f" (at most {limit})." if clean_tk.truncated or corr_tk.truncated else ".")
        )
    n_tokens = len(clean_tk.ids)
    layers, positions = _cells(req, lm.info.n_layers, n_tokens)

    # clean residual states: the store's cached run when there is one (fp16), else computed
    dtype = str(lm.dtype).removeprefix("torch.")
    settings = extract.CaptureSettings(dtype=dtype).key()
    run_id = extract.make_run_id(lm.info.model_id, req.clean, settings)
    clean_states = None
    if store.existing_runs([run_id]):
        clean_states = torch.from_numpy(store.run_layers(run_id))
        clean_source = "cache (fp16)"
        with torch.inference_mode():
            clean_last = P.clean_logits(lm, clean_states[-1, -1:].to(lm.device))[0]
    if clean_states is None:
        clean_states, _, clean_last = P.run_plain(lm, clean_tk.ids)
        clean_source = "computed"
    _, corr_outputs, corr_last = P.run_plain(lm, corr_tk.ids)

    answer = token_id(lm.tokenizer, req.answer) if req.answer else int(clean_last.float().argmax())
    against = (
        token_id(lm.tokenizer, req.against) if req.against else int(corr_last.float().argmax())
    )
    names = decode(lm, [answer, against])
    if answer == against:
        raise LayerScopeError(
            f"The answer and the against token are the same ({names[answer]!r}): the clean and "
            "corrupted prompts have the same top-1 next token; name two tokens "
            "(--answer and --against)."
        )
    ro_clean = P.readout(clean_last[None], answer, against, req.top_k)
    ro_corr = P.readout(corr_last[None], answer, against, req.top_k)
    clean_m, corr_m = float(ro_clean.metric[0]), float(ro_corr.metric[0])
    if abs(clean_m - corr_m) < 1e-6:
        raise LayerScopeError(
            f"The metric logit({names[answer]!r}) - logit({names[against]!r}) is the same "
            f"after both prompts ({clean_m:.4f}): nothing to recover."
        )

    cells = [(layer, p) for layer in layers for p in positions]
    ro = P.patch_cells(
        lm,
        corr_tk.ids,
        clean_states,
        cells,
        answer,
        against,
        req.top_k,
        corrupted_outputs=corr_outputs,
    )
    nl, npos, k = len(layers), len(positions), ro.top_ids.shape[1]
    names = decode(lm, ro.top_ids)
    top_tokens = [
        [[names[int(i)] for i in ro.top_ids[li * npos + pi]] for pi in range(npos)]
        for li in range(nl)
    ]
    tokens = extract.decode_tokens(lm.tokenizer, clean_tk.ids)
    corrupted_tokens = extract.decode_tokens(lm.tokenizer, corr_tk.ids)
    return Result(
        request=req,
        layers=layers,
        positions=positions,
        tokens=tokens,
        corrupted_tokens=corrupted_tokens,
        answer=decode(lm, [answer])[answer],
        against=decode(lm, [against])[against],
        clean_metric=clean_m,
        corrupted_metric=corr_m,
        patched=ro.metric.reshape(nl, npos),
        top_tokens=top_tokens,
        top_probs=ro.top_probs.reshape(nl, npos, k),
        clean_source=clean_source,
    )
