"""The Logit lens view: one prompt's layer × position readout, and its summary over a set,
through the logit lens or a tuned lens (trained on a set's cached states, stored in the
derived cache keyed by model fingerprint + set + training settings).

Needs the loaded model (its final norm and unembedding). ``compute(store, Request, lm)`` is
the view contract's entry (three modes: a set's summary, a stored run, a typed prompt);
``compute_run`` / ``compute_set`` are its parts, used by other views too.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from backend import derived
from backend.analysis.lens import TIE_RTOL, LensResult, LensSummary, logit_lens, summarize
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import units

Positions = Literal["last", "all"]
LensKind = Literal["logit", "tuned"]
LENS_KINDS = ("logit", "tuned")
TUNED_CACHE = "tuned_lens"
LAST_CHUNK_BYTES = 256 << 20  #: float32 logits per lens call over many prompts' last positions
#: training settings of the tuned lens (part of its cache key)
TUNED_SETTINGS = {"steps": 2000, "lr": 1e-3, "batch": 256, "test_share": 0.25, "seed": 0,
                  "eval_every": 50, "patience": 4}  # fmt: skip


def check_lens(lm) -> None:
    if not lm.info.has_lm_head or lm.unembed is None:
        raise LayerScopeError(
            f"The logit lens does not apply to {lm.info.ref}: it has no "
            "language-model head (an encoder such as BERT)."
        )


def lens_for_hidden(lm, hidden: np.ndarray, k: int = 5) -> LensResult:
    """Lens of ``hidden`` (n_layers + 1, n_tokens, d_model)."""
    check_lens(lm)
    return logit_lens(hidden, lm.final_norm, lm.unembed, k=k)


def decode(lm, ids) -> dict[int, str]:
    """Text of each distinct token id in ``ids`` (only those: vocabularies are large)."""
    uniq = sorted({int(i) for i in np.asarray(ids).ravel()})
    return dict(zip(uniq, lm.tokenizer.batch_decode([[i] for i in uniq])))


@dataclass(frozen=True)
class RunResult:
    """The lens of one prompt: ``lens`` arrays are (n_layers + 1, n_tokens[, k])."""

    lens: LensResult
    tokens: list[str]
    names: dict[int, str]  #: token id -> text for every id in ``lens.top_ids``
    #: set when the prompt was cut to the model's positions: the readout is of the cut prompt
    note: str | None = None

    @property
    def answer(self) -> str:
        return self.names[int(self.lens.top_ids[-1, -1, 0])]

    def commitment_text(self, pos: int = -1) -> str:
        """Where the final answer at ``pos`` is on top, from the numbers the grid shows (a
        near-tie counts as on top and is named as one)."""
        r = self.lens
        pos = pos % len(self.tokens)
        depth = int(r.commitment[pos])
        li = list(r.layers).index(depth)
        tied = [
            r.layers[i] for i in range(li, len(r.layers)) if r.on_top[i, pos] and r.tied[i, pos]
        ]
        text = f"it is on top from layer {depth} on"
        if tied:
            text += (
                f" (tied within {TIE_RTOL:.1%} with another token at layer"
                f"{'s' if len(tied) > 1 else ''} {', '.join(map(str, tied))})"
            )
        return text

    def to_frame(self) -> pd.DataFrame:
        r, toks = self.lens, self.tokens
        return pd.DataFrame(
            [
                {
                    "layer": L,
                    "pos": p,
                    "token": toks[p],
                    "top1": self.names[int(r.top_ids[li, p, 0])],
                    "p_top1": r.top_probs[li, p, 0],
                    "kl_to_final": r.kl_to_final[li, p],
                    "entropy": r.entropy[li, p],
                    "final_rank": r.final_rank[li, p],
                }
                for li, L in enumerate(r.layers)
                for p in range(len(toks))
            ]
        )

    def to_dict(self) -> dict:
        r = self.lens
        return {
            "tokens": self.tokens,
            "layers": list(r.layers),
            "top_tokens": [
                [[self.names[int(i)] for i in cell] for cell in row] for row in r.top_ids
            ],
            "top_probs": r.top_probs.round(4).tolist(),
            "kl_to_final": r.kl_to_final.round(4).tolist(),
            "entropy": r.entropy.round(4).tolist(),
            "final_rank": r.final_rank.tolist(),
            "commitment_depth": r.commitment.tolist(),
            "truncated": self.note is not None,
            **({"note": self.note} if self.note else {}),
        }


def cut_note(n_full: int, n_read: int) -> str:
    """What a view says when a prompt was longer than the model reads."""
    return (
        f"The prompt has {n_full} tokens; the model reads at most {n_read}, so this is the "
        f"readout of its first {n_read} tokens (the rest was cut)."
    )


def lens_of(
    lm, hidden: np.ndarray, tokens: list[str], k: int = 5, note: str | None = None
) -> RunResult:
    res = lens_for_hidden(lm, hidden, k)
    return RunResult(lens=res, tokens=tokens, names=decode(lm, res.top_ids), note=note)


def _check_kind(kind: str) -> None:
    if kind not in LENS_KINDS:
        raise LayerScopeError(f"Unknown lens '{kind}' (logit or tuned).")


def compute_run(
    store: Store,
    lm,
    run_id: str,
    k: int = 5,
    kind: LensKind = "logit",
    set_name: str | None = None,
) -> RunResult:
    """The lens of one stored run; ``kind="tuned"`` reads it through the tuned lens trained on
    ``set_name`` for the run's model (which must exist: :func:`train_tuned`)."""
    _check_kind(kind)
    hidden, toks = store.run_layers(run_id), store.tokens(run_id)["token"].tolist()
    row = store.get_run(run_id) or {}
    note = None
    if row.get("truncated"):
        note = "The stored run was cut to its first {n} tokens (the model's or --max-tokens' "
        note = note.format(n=len(toks)) + "limit): this is the readout of the cut prompt."
    if kind == "logit":
        return lens_of(lm, hidden, toks, k, note)
    from backend.analysis.tuned_lens import tuned_logit_lens

    check_lens(lm)
    tl = require_tuned(store, store.get_run(run_id)["model_id"], set_name)
    res = tuned_logit_lens(hidden, tl, lm.final_norm, lm.unembed, k=k)
    return RunResult(lens=res, tokens=toks, names=decode(lm, res.top_ids), note=note)


# -- tuned lens: trained on a set's cached states, kept in the store's derived cache --------
def tuned_key(store: Store, model_id: str, set_name: str, settings: dict | None = None) -> str:
    """Model fingerprint + set (name and the runs it holds) + training settings."""
    runs = units.set_runs_or_error(store, set_name, model_id)["run_id"].tolist()
    digest = hashlib.sha256("\n".join(runs).encode()).hexdigest()[:16]
    return json.dumps(
        [model_id, set_name, digest, settings or TUNED_SETTINGS], sort_keys=True, default=str
    )


def load_tuned(store: Store, model_id: str, set_name: str, settings: dict | None = None):
    """The stored tuned lens of (model, set, settings), or None (never trains)."""
    from backend.analysis.tuned_lens import TunedLens

    key = tuned_key(store, model_id, set_name, settings)
    return derived.load(store, TUNED_CACHE, key, lambda b: TunedLens.load(io.BytesIO(b)))


def require_tuned(store: Store, model_id: str, set_name: str | None):
    if set_name is None:
        raise LayerScopeError("A tuned lens is trained on a prompt set: name the set.")
    tl = load_tuned(store, model_id, set_name)
    if tl is None:
        raise LayerScopeError(
            f"No tuned lens for this model on '{set_name}' yet: train one first "
            "(Lens page button, or `python -m backend lens --set NAME --lens tuned`)."
        )
    return tl


def train_tuned(store: Store, lm, model_id: str, set_name: str, settings: dict | None = None):
    """Train the tuned lens on the set's cached states and store it; returns it."""
    from backend.analysis.tuned_lens import train_tuned_lens

    check_lens(lm)
    cfg = settings or TUNED_SETTINGS
    runs = units.set_runs_or_error(store, set_name, model_id)["run_id"].tolist()
    if len(runs) < 2:
        raise LayerScopeError("A tuned lens needs at least two prompts (some are held out).")
    hiddens = [store.run_layers(r) for r in runs]
    tl = train_tuned_lens(hiddens, lm.final_norm, lm.unembed, **cfg)
    buf = io.BytesIO()
    tl.save(buf)
    derived.save(store, TUNED_CACHE, tuned_key(store, model_id, set_name, settings), buf.getvalue())
    return tl


def ensure_tuned(store: Store, lm, model_id: str, set_name: str):
    """The stored tuned lens, trained first when missing (CLI; a page asks with a button)."""
    return load_tuned(store, model_id, set_name) or train_tuned(store, lm, model_id, set_name)


def train_seconds(store: Store, model_id: str, set_name: str, vocab_size: int) -> float:
    """A rough upper bound of the training time on this CPU (early stopping usually ends it
    sooner): the step cap x (layers x batch) rows
    through d x vocab (forward + backward ~ 3x), plus reading the set, at ~2e10 flop/s."""
    m = store.get_model(model_id)
    n_runs = len(units.set_runs_or_error(store, set_name, model_id))
    s = TUNED_SETTINGS
    flops = (
        3 * 2 * s["steps"] * m["n_layers"] * s["batch"] * m["d_model"] * (vocab_size + m["d_model"])
    )
    return flops / 2e10 + 0.02 * n_runs


Mode = Literal["set", "run", "prompt"]


@dataclass(frozen=True, kw_only=True)
class Request:
    """One request, three sources: a set's summary (``set_name``), one stored run
    (``run_id``), or a typed prompt read on the fly (``prompt``, never stored)."""

    model: str | None = None  #: the model's reference (loads it); default: the stored model's
    model_id: str | None = None  #: the cached model (set and run modes)
    set_name: str | None = None  #: summarise over this set (and the set a tuned lens is from)
    run_id: str | None = None  #: one stored prompt run
    prompt: str | None = None  #: a typed prompt
    positions: Positions = "last"  #: set mode: each prompt's next-token position, or all
    kind: LensKind = "logit"  #: logit lens, or the tuned lens trained on ``set_name``
    top: int = 5  #: top tokens per cell (run and prompt modes)

    def __post_init__(self):
        if self.positions not in ("last", "all"):
            raise LayerScopeError(f"Unknown positions '{self.positions}' (last or all).")
        _check_kind(self.kind)
        if self.run_id is not None and self.prompt is not None:
            raise LayerScopeError("Give either a stored run or a typed prompt, not both.")
        if self.prompt is not None:
            if not self.prompt.strip():
                raise LayerScopeError("Type a prompt.")
            if self.kind != "logit":
                raise LayerScopeError(
                    "A tuned lens is trained on a set: use --set NAME with --lens tuned."
                )
            if self.model is None:
                raise LayerScopeError("Name the model whose lens reads the prompt.")
        elif self.model_id is None or (self.run_id is None and self.set_name is None):
            raise LayerScopeError("Give either --prompt TEXT or --set NAME.")
        if self.kind == "tuned" and self.set_name is None:
            raise LayerScopeError("A tuned lens is trained on a prompt set: name the set.")
        if not 1 <= self.top <= 100:
            raise LayerScopeError("--top takes 1 to 100 tokens per cell.")

    @property
    def mode(self) -> Mode:
        return "prompt" if self.prompt is not None else "run" if self.run_id else "set"


@dataclass(frozen=True)
class SetResult:
    request: Request
    summary: LensSummary
    tuned: object | None = None  #: the TunedLens read through (kind "tuned")
    #: kind "tuned": ``summary`` is over the held-out prompts only (out of sample); this is
    #: the same over the prompts that trained the lens (in sample)
    summary_train: LensSummary | None = None

    def half_committed_layer(self) -> int:
        """The layer by which half of the positions have committed to their final answer."""
        s = self.summary
        return s.layers[int(np.searchsorted(s.commitment_counts.cumsum(), s.n_positions / 2))]

    def to_frame(self) -> pd.DataFrame:
        s = self.summary
        return pd.DataFrame(
            {
                "layer": s.layers,
                "kl_mean": s.kl_mean,
                "kl_median": s.kl_quantiles[:, 1],
                "entropy_mean": s.entropy_mean,
                "rank_median": s.rank_median,
                "top1_is_final": s.agreement,
                "commit_here": s.commitment_counts,
            }
        )

    def kl_frame(self) -> pd.DataFrame | None:
        """Per layer: held-out KL(final || lens) of the logit and the tuned lens."""
        return None if self.tuned is None else tuned_kl_frame(self.tuned)

    def curve_frame(self) -> pd.DataFrame | None:
        """The tuned lens's held-out KL during training (None for the logit lens)."""
        t = self.tuned
        if t is None:
            return None
        return pd.DataFrame({"step": t.curve_step, "heldout_kl": t.curve_kl})

    def to_dict(self) -> dict:
        s, t = self.summary, self.tuned
        tuned = {}
        if t is not None:
            tuned = {
                "summary_prompts": f"held-out ({t.n_test} prompts not used in training)",
                "kl_logit_heldout": np.round(t.kl_logit, 4).tolist(),
                "kl_tuned_heldout": np.round(t.kl_tuned, 4).tolist(),
                "n_train": t.n_train,
                "n_test": t.n_test,
                "best_step": int(t.steps),
                "steps_run": int(t.steps_run),
                "kl_curve": {
                    "step": t.curve_step.tolist(),
                    "heldout_kl": np.round(t.curve_kl, 5).tolist(),
                },
            }
            if self.summary_train is not None:
                r = self.summary_train
                tuned["in_sample"] = {
                    "n_positions": r.n_positions,
                    "kl_mean": r.kl_mean.round(4).tolist(),
                    "top1_is_final": r.agreement.round(4).tolist(),
                }
        return {
            "lens": self.request.kind,
            **tuned,
            "positions": self.request.positions,
            "n_positions": s.n_positions,
            "layers": list(s.layers),
            "kl_mean": s.kl_mean.round(4).tolist(),
            "kl_median": s.kl_quantiles[:, 1].round(4).tolist(),
            "entropy_mean": s.entropy_mean.round(4).tolist(),
            "rank_median": s.rank_median.tolist(),
            "top1_is_final": s.agreement.round(4).tolist(),
            "commitment_counts": s.commitment_counts.tolist(),
        }


def tuned_kl_frame(tuned) -> pd.DataFrame:
    """Per layer: held-out KL(final || lens) of the logit and the tuned lens."""
    return pd.DataFrame(
        {"layer": tuned.layers, "kl_logit": tuned.kl_logit, "kl_tuned": tuned.kl_tuned}
    )


def compute_set(store: Store, lm, req: Request) -> SetResult:
    """The lens over every stored run of the set, aggregated per layer."""
    check_lens(lm)
    run_ids = units.set_runs_or_error(store, req.set_name, req.model_id)["run_id"].tolist()
    tl = None
    if req.kind == "logit":

        def read(h):
            return lens_for_hidden(lm, h, 1)
    else:
        from backend.analysis.tuned_lens import tuned_logit_lens

        tl = require_tuned(store, req.model_id, req.set_name)

        def read(h):
            return tuned_logit_lens(h, tl, lm.final_norm, lm.unembed, k=1)

    def summary(ids):
        if req.positions == "all":
            return summarize([read(store.run_layers(r)) for r in ids], "all")
        # positions are independent (the final norm is per token): read out only each
        # prompt's last position, many prompts per call (one call per prompt cost 634 s for
        # 278 GPT-2-size prompts on a loaded machine, its fixed cost dominating)
        h = store.pooled(ids, "last")  # (n_layers + 1, n_runs, d_model)
        step = max(1, LAST_CHUNK_BYTES // (4 * h.shape[0] * max(lm.info.vocab_size or 1, 1)))
        return summarize([read(h[:, a : a + step]) for a in range(0, len(ids), step)], "all")

    if tl is None:
        return SetResult(request=req, summary=summary(run_ids))
    # the tuned lens: out of sample by default (the prompts it was not trained on)
    test = set(int(i) for i in tl.test_index)
    held = [r for i, r in enumerate(run_ids) if i in test]
    train = [r for i, r in enumerate(run_ids) if i not in test]
    return SetResult(req, summary(held), tl, summary(train) if train else None)


@dataclass(frozen=True)
class Result:
    """The lens of one prompt (``run``: modes run and prompt) or over a set (``set``)."""

    request: Request
    run: RunResult | None = None
    set: SetResult | None = None

    def to_frame(self) -> pd.DataFrame:
        return self.run.to_frame() if self.run is not None else self.set.to_frame()

    def to_dict(self) -> dict:
        return self.run.to_dict() if self.run is not None else self.set.to_dict()


def compute(store: Store, req: Request, lm=None) -> Result:
    """The lens ``req`` asks for; ``lm`` is the loaded model (loaded here when not given)."""
    if lm is None:
        from backend import models

        ref = req.model or (store.get_model(req.model_id) or {}).get("ref")
        if ref is None:
            raise LayerScopeError("This model is not in the cache: extract a set first.")
        lm = models.get_model(ref)
    check_lens(lm)
    if req.mode == "set":
        return Result(request=req, set=compute_set(store, lm, req))
    if req.mode == "run":
        run = compute_run(store, lm, req.run_id, req.top, req.kind, req.set_name)
        return Result(request=req, run=run)
    return _prompt(req, lm)


def _prompt(req: Request, lm) -> Result:
    """A typed prompt: captured on the fly (exactly, in the model's dtype), never stored."""
    from backend import models
    from backend.capture import extract  # torch: this path runs the model anyway

    limit = models.max_positions(lm.model.config.to_dict())
    tk = extract.tokenize(lm.tokenizer, [req.prompt], limit)[0]
    if not tk.ids:
        raise LayerScopeError("The prompt has no tokens for this tokenizer; type some words.")
    settings = extract.CaptureSettings(dtype=str(lm.dtype).removeprefix("torch."))
    run = next(iter(extract.capture(lm, [("lens", tk)], settings, exact=True)))[0]
    note = cut_note(tk.n_full, len(tk.ids)) if tk.truncated else None
    res = lens_of(lm, np.asarray(run.hidden, dtype=np.float32), run.tokens, req.top, note)
    return Result(request=req, run=res)
