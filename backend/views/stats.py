"""The Layer statistics view: norms, massive activations, effective rank, anisotropy per layer.

Shared by the Stats page and the `stats` CLI: ``compute(store, Request) -> Result``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from backend.analysis.stats import LayerStats, layer_stats
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import units


@dataclass(frozen=True, kw_only=True)
class Request:
    model_id: str
    set_name: str
    max_runs: int = 200  #: statistics over the first N prompts of the set

    def __post_init__(self):
        if self.max_runs < 1:
            raise LayerScopeError("--max-runs must be at least 1.")


@dataclass(frozen=True)
class Result:
    request: Request
    stats: LayerStats
    meta: pd.DataFrame  #: one row per token unit: run_id, pos, token, text, name (for hovers)
    n_prompts: int

    @property
    def notice(self) -> str | None:
        """How the tokens were sampled when the runs held more than ``units.MAX_UNITS``."""
        return units.notice_of(self.meta)

    @property
    def names(self) -> list[str]:
        return self.meta["name"].tolist()

    def to_frame(self) -> pd.DataFrame:
        s, names = self.stats, self.names
        return pd.DataFrame(
            {
                "layer": s.layers,
                "norm_median": s.norm_quantiles[:, 2],
                "norm_p95": s.norm_quantiles[:, 4],
                "max_abs": s.max_abs,
                "median_abs": s.median_abs,
                "massive_ratio": s.massive_ratio,
                "massive_dim": s.massive_dim,
                "massive_token": [names[u] for u in s.massive_unit],
                "effective_rank": s.effective_rank,
                "anisotropy": s.anisotropy,
            }
        )

    def top(self, layer: int) -> pd.DataFrame:
        """The largest |activations| at ``layer`` with their dimension, token and prompt."""
        s = self.stats
        li = s.layers.index(layer)
        u = s.top_units[li]
        m = self.meta.iloc[u]
        return pd.DataFrame(
            {
                "value": s.top_values[li],
                "× median": abs(s.top_values[li]) / s.median_abs[li],
                "dim": s.top_dims[li],
                "token": [f"{p}:{t}" for p, t in zip(m["pos"], m["token"])],
                "prompt": m["text"].to_numpy(),
                "run_id": m["run_id"].to_numpy(),
            }
        )

    def to_dict(self) -> dict:
        s, names = self.stats, self.names
        return {
            "n_tokens": len(names),
            "n_prompts": self.n_prompts,
            **({"notice": self.notice} if self.notice else {}),
            "layers": list(s.layers),
            "norm_quantiles": {
                "q": [0.05, 0.25, 0.5, 0.75, 0.95],
                "values": s.norm_quantiles.round(4).tolist(),
            },
            "norm_median": s.norm_quantiles[:, 2].round(4).tolist(),
            "max_abs": s.max_abs.round(4).tolist(),
            "median_abs": s.median_abs.round(5).tolist(),
            "massive_ratio": s.massive_ratio.round(2).tolist(),
            "massive_dim": s.massive_dim.tolist(),
            "massive_token": [names[u] for u in s.massive_unit],
            "massive_top": [
                [
                    {"value": round(float(v), 4), "dim": int(d), "token": names[u]}
                    for v, d, u in zip(vs, ds, us)
                ]
                for vs, ds, us in zip(s.top_values, s.top_dims, s.top_units)
            ],
            "effective_rank": s.effective_rank.round(3).tolist(),
            "anisotropy": s.anisotropy.round(4).tolist(),
        }


def compute(store: Store, req: Request, lm=None) -> Result:
    """Statistics over every token (special ones included: they carry the massive
    activations) of up to ``max_runs`` runs of the set."""
    runs = units.set_runs_or_error(store, req.set_name, req.model_id).head(req.max_runs)
    layers = list(range(store.get_model(req.model_id)["n_layers"] + 1))
    x, meta = units.token_units(store, runs, layers, skip_special=False)
    meta["name"] = [f"{t!r} in '{txt[:30]}'" for t, txt in zip(meta["token"], meta["text"])]
    return Result(request=req, stats=layer_stats(x, layers), meta=meta, n_prompts=len(runs))
