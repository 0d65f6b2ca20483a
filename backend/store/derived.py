"""Sizes, the derived-results cache (bytes by kind and key) and measured throughput.

A part of ``Store`` (backend/store/store.py); every SQL string of the project lives in
backend/store/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

log = logging.getLogger(__name__)


class _Derived:
    # -- sizes ----------------------------------------------------------------------------
    def summary(self) -> dict:
        q = self._one(
            """SELECT (SELECT count(*) FROM models), (SELECT count(*) FROM prompt_sets),
                      (SELECT count(*) FROM runs), (SELECT coalesce(sum(n_tokens), 0) FROM runs),
                      (SELECT coalesce(sum(octet_length(data)), 0) FROM activations),
                      (SELECT coalesce(sum(bytes), 0) FROM shards),
                      (SELECT count(*) FROM run_shards), (SELECT count(*) FROM shards)"""
        )
        size = self.path.stat().st_size if isinstance(self.path, Path) and self.path.exists() else 0
        return {
            "models": q[0],
            "sets": q[1],
            "runs": q[2],
            "tokens": int(q[3]),
            "activation_bytes": int(q[4]) + int(q[5]),
            "file_bytes": size,
            "shard_bytes": int(q[5]),  #: Parquet shards (part of activation_bytes)
            "shard_runs": int(q[6]),
            "shard_files": int(q[7]),
        }

    def set_coverage(self) -> pd.DataFrame:
        """Per (set, model): runs present, their tokens, and how many live in Parquet shards."""
        return self._df(
            """SELECT sp.set_name, m.model_id, m.ref, count(DISTINCT sp.idx) AS n_runs,
                      coalesce(sum(r.n_tokens), 0)::BIGINT AS tokens,
                      count(DISTINCT sp.idx) FILTER (rs.run_id IS NOT NULL) AS n_shard_runs
               FROM set_prompts sp JOIN runs r ON r.prompt_id = sp.prompt_id AND r.kind='prompt'
               LEFT JOIN run_shards rs USING (run_id)
               JOIN models m ON m.model_id = r.model_id
               GROUP BY ALL ORDER BY sp.set_name, m.ref"""
        )

    # -- derived results cache ------------------------------------------------------------
    def cache_get(self, kind: str, key: str) -> bytes | None:
        row = self._one("SELECT payload FROM derived WHERE kind = ? AND key = ?", [kind, key])
        return row[0] if row else None

    def cache_put(self, kind: str, key: str, payload: bytes) -> None:
        """Keep a derived result; a read-only store keeps nothing (the caller recomputes)."""
        if self.read_only:
            return
        self.con.execute(
            """INSERT INTO derived VALUES (?, ?, ?, now())
               ON CONFLICT (kind, key) DO UPDATE SET payload = excluded.payload""",
            [kind, key, payload],
        )

    def record_throughput(self, model_id: str, dtype: str, tokens_per_s: float) -> None:
        self.cache_put("throughput", f"{model_id}:{dtype}", json.dumps(tokens_per_s).encode())

    def throughput(self, model_id: str, dtype: str) -> float | None:
        """Tokens per second measured by the last job of this model and dtype."""
        raw = self.cache_get("throughput", f"{model_id}:{dtype}")
        return float(json.loads(raw)) if raw else None
