"""The Prompt view: one stored run's tokens, the norm of every hidden state, and the sets that
hold its prompt (the Prompt page's numbers). Reads the store only; no model.

Shared by the Prompt page and ``python -m backend prompt``: ``compute(store, Request) ->
Result``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from backend.errors import LayerScopeError
from backend.store import Store


@dataclass(frozen=True, kw_only=True)
class Request:
    run_id: str  #: the stored run (a prompt run, or one sampled generation)
    model_id: str | None = None  #: when given, the run must be this model's

    def __post_init__(self):
        if not self.run_id:
            raise LayerScopeError("Choose a prompt (a run id).")


@dataclass(frozen=True, kw_only=True)
class Result:
    request: Request
    run: dict  #: the stored run (kind, model_id, prompt_id, text, n_tokens, truncated, ...)
    model: dict  #: the run's model (ref, n_layers, has_lm_head, ...); {} when unknown
    tokens: pd.DataFrame  #: pos, token_id, token, start, end, is_special
    norms: np.ndarray  #: (n_layers + 1, n_tokens) L2 norm of each hidden state
    sets: pd.DataFrame  #: the sets holding the prompt: set_name, idx, label, group

    @property
    def n_layers(self) -> int:
        """Layers including the embeddings (layer 0)."""
        return int(self.norms.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, token): the norm of that hidden state."""
        n_l, n_t = self.norms.shape
        return pd.DataFrame(
            {
                "layer": np.repeat(np.arange(n_l), n_t),
                "pos": np.tile(self.tokens["pos"].to_numpy(np.int64), n_l),
                "token": np.tile(self.tokens["token"].to_numpy(object), n_l),
                "norm": self.norms.ravel(),
            }
        )

    def to_dict(self) -> dict:
        r = self.run
        sets = self.sets.astype(object).where(self.sets.notna(), None)
        return {
            "run_id": self.request.run_id,
            "model_id": str(r["model_id"]),
            "model": self.model.get("ref"),
            "kind": str(r["kind"]),
            "text": str(r.get("text", "")),
            "n_tokens": int(r["n_tokens"]),
            "truncated": bool(r["truncated"]),
            "n_layers": self.n_layers,
            "tokens": [str(t) for t in self.tokens["token"]],
            "is_special": [bool(v) for v in self.tokens["is_special"]],
            "norms": np.round(self.norms.astype(np.float64), 4).tolist(),
            "sets": [
                {
                    "set_name": str(s["set_name"]),
                    "idx": int(s["idx"]),
                    "label": s["label"],
                    "group": s["group"],
                }
                for s in sets.to_dict("records")
            ],
        }


def compute(store: Store, req: Request, lm=None) -> Result:
    run = store.get_run(req.run_id)
    if run is None:
        raise LayerScopeError(
            f"No run '{req.run_id}' in the cache. It may have been deleted; pick another prompt."
        )
    if req.model_id is not None and run["model_id"] != req.model_id:
        raise LayerScopeError(f"Run '{req.run_id}' is not a run of this model.")
    h = store.run_layers(req.run_id)  # (n_layers + 1, n_tokens, d_model)
    sets = (
        store.prompt_sets_of(run["prompt_id"])
        if "prompt_id" in run
        else pd.DataFrame(columns=["set_name", "idx", "label", "group"])
    )
    return Result(
        request=req,
        run=run,
        model=store.get_model(run["model_id"]) or {},
        tokens=store.tokens(req.run_id),
        norms=np.linalg.norm(h, axis=-1),
        sets=sets,
    )
