"""Parquet shards written by the Ray engine: registered in one transaction, read in place.

A part of ``Store`` (backend/store/store.py); every SQL string of the project lives in
backend/store/."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa

from backend.errors import LayerScopeError
from backend.records import prompt_id

log = logging.getLogger(__name__)


class _Shards:
    # -- Parquet shards (written by backend/jobs/ray_engine.py, read in place) --------------
    def shard_root(self) -> Path:
        """Default home of shards: ``shards/`` next to the DuckDB file."""
        base = self.path.parent if isinstance(self.path, Path) else Path("cache")
        return (base / "shards").resolve()

    def _shard_paths(self, run_ids: list[str], layer: int | None = None) -> list[str]:
        """The shard files holding these runs (one layer, or all); empty if all are native."""
        rows = self.con.execute(
            """SELECT DISTINCT s.path FROM run_shards r JOIN shards s USING (job_id)
               WHERE r.run_id IN (SELECT unnest(?)) AND (? IS NULL OR s.layer = ?)
               ORDER BY s.path""",
            [list(run_ids), layer, layer],
        ).fetchall()
        return [r[0] for r in rows]

    def shard_model_info(self, paths: list[str]) -> dict:
        """The ModelInfo (as a dict) the workers wrote on the layer-0 rows of a shard."""
        row = self._one(
            """SELECT any_value(info) FROM read_parquet(?, hive_partitioning = true)
               WHERE layer = 0""",
            [list(paths)],
        )
        if row is None or row[0] is None:
            raise LayerScopeError("The shard has no layer-0 rows: nothing was captured.")
        return json.loads(row[0])

    def check_shard(self, paths: list[str], run_ids: list[str], n_layers: int) -> None:
        """Every layer 0..n_layers holds each of ``run_ids`` exactly once, and nothing else
        (a retried task must not duplicate a run; a lost one must not go unnoticed)."""
        got = self.con.execute(
            """SELECT layer, count(*), count(DISTINCT run_id),
                      count(*) FILTER (run_id NOT IN (SELECT unnest(?)))
               FROM read_parquet(?, hive_partitioning = true) GROUP BY layer ORDER BY layer""",
            [list(run_ids), list(paths)],
        ).fetchall()
        want = [(layer, len(run_ids), len(run_ids), 0) for layer in range(n_layers + 1)]
        if [tuple(int(v) for v in r) for r in got] != want:
            bad = [r for r in got if tuple(r[1:]) != (len(run_ids), len(run_ids), 0)]
            raise LayerScopeError(
                f"The shard is incomplete or has duplicated runs (expected {len(run_ids)} runs "
                f"in each of layers 0..{n_layers}; got (layer, rows, runs, unknown) = "
                f"{bad or got}); nothing was registered."
            )

    def register_shards(
        self, info, job_id: str, plan: pd.DataFrame, files: list[tuple[str, int, int]]
    ) -> None:
        """Make a completed shard's runs visible, in ONE transaction: the model row, prompts,
        runs and tokens (from the layer-0 files) and the shard files themselves.

        ``plan``: run_id, text, settings (JSON) of the runs the shard holds; ``files``:
        (absolute path, layer, bytes) of every Parquet file of the shard."""
        paths = [f[0] for f in files]
        layer0 = [f[0] for f in files if f[1] == 0]
        run_ids = plan["run_id"].tolist()
        self.check_shard(paths, run_ids, info.n_layers)
        plan_tbl = pa.table(
            {
                "run_id": run_ids,
                "prompt_id": [prompt_id(t) for t in plan["text"]],
                "text": plan["text"].tolist(),
                "settings": plan["settings"].tolist(),
            }
        )
        shard_tbl = pa.table(
            {
                "path": paths,
                "layer": pa.array([f[1] for f in files], pa.int16()),
                "bytes": pa.array([f[2] for f in files], pa.int64()),
            }
        )
        with self._lock:
            self.con.register("plan_tbl", plan_tbl)
            self.con.register("shard_tbl", shard_tbl)
            self.con.execute("BEGIN TRANSACTION")
            try:
                self.upsert_model(info)
                self.con.execute(
                    """INSERT INTO prompts SELECT DISTINCT prompt_id, text FROM plan_tbl
                       ON CONFLICT DO NOTHING"""
                )
                self.con.execute(
                    """INSERT INTO runs SELECT p.run_id, ?, p.prompt_id, 'prompt', p.settings,
                           s.n_tokens, s.n_tokens, s.truncated, NULL, NULL, NULL, now()
                       FROM plan_tbl p JOIN read_parquet(?, hive_partitioning = true) s
                         USING (run_id)
                       WHERE s.layer = 0 ON CONFLICT DO NOTHING""",
                    [info.model_id, layer0],
                )
                self.con.execute(
                    """INSERT INTO tokens SELECT run_id,
                           unnest(generate_series(0, len(token_ids) - 1)), unnest(token_ids),
                           unnest(tokens), unnest(starts), unnest("ends"), unnest(special)
                       FROM read_parquet(?, hive_partitioning = true) WHERE layer = 0""",
                    [layer0],
                )
                self.con.execute(
                    """INSERT INTO shards SELECT ?, ?, path, layer, ?, bytes, now()
                       FROM shard_tbl""",
                    [info.model_id, job_id, len(run_ids)],
                )
                self.con.execute(
                    "INSERT INTO run_shards SELECT run_id, ?, ? FROM plan_tbl",
                    [info.model_id, job_id],
                )
                self.con.execute("COMMIT")
            except Exception:
                self.con.execute("ROLLBACK")
                raise
            finally:
                self.con.unregister("plan_tbl")
                self.con.unregister("shard_tbl")
