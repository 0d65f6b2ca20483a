"""The Library view: what the cache holds (models, prompt sets, runs per set and model) and
its sizes on disk (the Library page's numbers; deleting and exporting stay store actions).

Shared by the Library page and ``python -m backend ls``: ``compute(store, Request) ->
Result``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from backend.store import Store


@dataclass(frozen=True, kw_only=True)
class Request:
    """The whole cache: nothing to choose."""


@dataclass(frozen=True, kw_only=True)
class Result:
    request: Request
    path: str  #: the cache file
    summary: dict  #: runs, tokens, activation_bytes, file_bytes, models, sets, shards
    models: pd.DataFrame  #: one row per model: ref, architecture, n_layers, n_runs, bytes...
    sets: pd.DataFrame  #: one row per prompt set: set_name, n_prompts, has_labels, ...
    coverage: pd.DataFrame  #: per (set, model): set_name, model_id, ref, n_runs, tokens, ...

    def to_frame(self) -> pd.DataFrame:
        """Runs per set and model (the table the export picks from)."""
        return self.coverage

    def to_dict(self) -> dict:
        """What ``python -m backend ls --json`` prints."""

        def records(df: pd.DataFrame) -> list[dict]:
            df = df.astype(object).where(df.notna(), None)
            return [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]

        return {
            "db": self.path,
            "summary": {k: int(v) for k, v in self.summary.items()},
            "models": records(self.models.drop(columns=["last_used"], errors="ignore")),
            "sets": records(self.sets),
            "coverage": records(self.coverage),
        }


def _plain(v):
    """A numpy scalar as the Python value JSON knows."""
    return v.item() if hasattr(v, "item") else v


def compute(store: Store, req: Request, lm=None) -> Result:
    return Result(
        request=req,
        path=str(store.path),
        summary=store.summary(),
        models=store.list_models(),
        sets=store.list_sets(),
        coverage=store.set_coverage(),
    )
