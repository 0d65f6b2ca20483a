"""The Logit lens view: one prompt's layer × position readout, and its summary over a set.

Needs the loaded model (its final norm and unembedding): ``compute_run(store, lm, run_id)``
and ``compute_set(store, lm, Request)``; the page and the `lens` CLI share both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from backend.analysis.lens import LensResult, LensSummary, logit_lens, summarize
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import units

Positions = Literal["last", "all"]


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

    @property
    def answer(self) -> str:
        return self.names[int(self.lens.top_ids[-1, -1, 0])]

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
        }


def lens_of(lm, hidden: np.ndarray, tokens: list[str], k: int = 5) -> RunResult:
    res = lens_for_hidden(lm, hidden, k)
    return RunResult(lens=res, tokens=tokens, names=decode(lm, res.top_ids))


def compute_run(store: Store, lm, run_id: str, k: int = 5) -> RunResult:
    """The lens of one stored run."""
    return lens_of(lm, store.run_layers(run_id), store.tokens(run_id)["token"].tolist(), k)


@dataclass(frozen=True)
class Request:
    model_id: str
    set_name: str
    positions: Positions = "last"  #: the next-token position of each prompt, or all

    def __post_init__(self):
        if self.positions not in ("last", "all"):
            raise LayerScopeError(f"Unknown positions '{self.positions}' (last or all).")


@dataclass(frozen=True)
class SetResult:
    request: Request
    summary: LensSummary

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

    def to_dict(self) -> dict:
        s = self.summary
        return {
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


def compute_set(store: Store, lm, req: Request) -> SetResult:
    """The lens over every stored run of the set, aggregated per layer."""
    check_lens(lm)
    run_ids = units.set_runs_or_error(store, req.set_name, req.model_id)["run_id"].tolist()
    results = [lens_for_hidden(lm, store.run_layers(r), 1) for r in run_ids]
    return SetResult(request=req, summary=summarize(results, req.positions))
