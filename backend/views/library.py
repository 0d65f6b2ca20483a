"""The Library view: what the cache holds (models, prompt sets, runs per set and model) and
its sizes on disk (the Library page's numbers; deleting and exporting stay store actions).

Shared by the Library page and ``python -m backend library``: ``compute(store, Request) ->
Result``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from backend.store import Store

MODEL_COLUMNS = ["ref", "architecture", "n_layers", "d_model", "n_runs", "bytes", "model_id"]
SET_COLUMNS = ["set_name", "n_prompts", "has_labels", "has_token_labels", "description"]


@dataclass(frozen=True, kw_only=True)
class Request:
    """The whole cache: nothing to choose."""


@dataclass(frozen=True, kw_only=True)
class Result:
    request: Request
    path: str  #: the cache file
    summary: dict  #: runs, tokens, activation_bytes, file_bytes, models, sets, shards
    models: pd.DataFrame  #: one row per model: MODEL_COLUMNS (bytes: its activations)
    sets: pd.DataFrame  #: one row per prompt set: SET_COLUMNS and source
    coverage: pd.DataFrame  #: per (set, model): set_name, model_id, ref, n_runs, tokens, ...

    def to_frame(self) -> pd.DataFrame:
        """Runs per set and model (the table the export picks from)."""
        return self.coverage

    def to_dict(self) -> dict:
        def records(df: pd.DataFrame) -> list[dict]:
            return df.astype(object).where(df.notna(), None).to_dict("records")

        def plain(v):
            return v.item() if hasattr(v, "item") else v

        return {
            "path": self.path,
            "summary": {k: int(v) for k, v in self.summary.items()},
            "models": [
                {k: plain(v) for k, v in r.items()} for r in records(self.models[MODEL_COLUMNS])
            ],
            "sets": [{k: plain(v) for k, v in r.items()} for r in records(self.sets[SET_COLUMNS])],
            "coverage": [{k: plain(v) for k, v in r.items()} for r in records(self.coverage)],
        }


def compute(store: Store, req: Request, lm=None) -> Result:
    return Result(
        request=req,
        path=str(store.path),
        summary=store.summary(),
        models=store.list_models(),
        sets=store.list_sets(),
        coverage=store.set_coverage(),
    )
