"""Parquet shards written by the Ray engine: registered in one transaction, read in place.

A part of ``Store`` (backend/store/store.py); every SQL string of the project lives in
backend/store/."""

from __future__ import annotations

import json
import logging
import shutil
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa

from backend.errors import LayerScopeError
from backend.records import prompt_id
from backend.store.connection import _remove_files

log = logging.getLogger(__name__)


def _damage(path: str, size: int, crc: int | None = None) -> str | None:
    """Why a registered shard file cannot be trusted, or None: gone, another size, or (with
    ``crc``) other bytes than were registered."""
    f = Path(path)
    if not f.is_file():
        return "missing"
    got = f.stat().st_size
    if got != size:
        return f"{got} bytes, registered with {size}"
    if crc is not None and _crc32(f) != crc:
        return "its bytes changed since it was registered"
    return None


def _crc32(f: Path) -> int:
    crc = 0
    with open(f, "rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


class _Shards:
    # -- Parquet shards (written by backend/jobs/ray_engine.py, read in place) --------------
    def shard_root(self) -> Path:
        """Default home of shards: ``shards/`` next to the DuckDB file."""
        base = self.path.parent if isinstance(self.path, Path) else Path("cache")
        return (base / "shards").resolve()

    def _shard_paths(self, run_ids: list[str], layer: int | None = None) -> list[str]:
        """The shard files holding these runs (one layer, or all); empty if all are native.
        A file that is missing or no longer has its registered size is refused with one
        message (which runs, and that extract recomputes them) before DuckDB reads it."""
        rows = self.con.execute(
            """SELECT DISTINCT s.path, s.bytes, s.job_id FROM run_shards r
               JOIN shards s USING (job_id)
               WHERE r.run_id IN (SELECT unnest(?)) AND (? IS NULL OR s.layer = ?)
               ORDER BY s.path""",
            [list(run_ids), layer, layer],
        ).fetchall()
        bad = {job for path, size, job in rows if _damage(path, size) is not None}
        if bad:
            n = self._one(
                "SELECT count(*) FROM run_shards WHERE job_id IN (SELECT unnest(?))", [list(bad)]
            )[0]
            raise LayerScopeError(
                f"{n} stored runs live in Parquet shard files that are missing or damaged "
                f"(shard {', '.join(sorted(bad))}); other runs are unaffected. Run the same "
                "extract again: it recomputes exactly those runs."
            )
        return [r[0] for r in rows]

    def damaged_shards(self, model_id: str | None = None, checksum: bool = True) -> dict:
        """{job_id: first problem} for every registered shard job with a file that is missing,
        of another size, or (``checksum``) whose CRC-32 differs from the one registered."""
        rows = self.con.execute(
            """SELECT job_id, path, bytes, crc32 FROM shards
               WHERE ? IS NULL OR model_id = ? ORDER BY job_id, path""",
            [model_id, model_id],
        ).fetchall()
        out: dict[str, str] = {}
        for job, path, size, crc in rows:
            if job in out:
                continue
            why = _damage(path, size, crc if checksum else None)
            if why:
                out[job] = f"{Path(path).parent.name}/{Path(path).name}: {why}"
        return out

    def repair_shards(self, model_id: str) -> int:
        """Forget the runs of damaged shard jobs (and those jobs' remaining files), so an
        extract recomputes exactly them; returns how many runs were forgotten."""
        bad = self.damaged_shards(model_id)
        if not bad:
            return 0
        for job, why in bad.items():
            log.warning("shard %s is damaged (%s): its runs will be recomputed", job, why)
        with self._transaction():
            self.con.execute(
                """CREATE OR REPLACE TEMP TABLE doomed AS
                   SELECT run_id FROM run_shards WHERE job_id IN (SELECT unnest(?))""",
                [list(bad)],
            )
            n = self._one("SELECT count(*) FROM doomed")[0]
            dead = self._delete_runs_in_doomed()
        _remove_files(dead)
        return int(n)

    def remove_orphan_shards(self) -> list[str]:
        """Shard directories no registered file lives in (a driver killed before it
        registered its wave: ``.tmp-<job>`` or a renamed job directory). Left alone while any
        job is running (its files are not registered yet). Returns what was removed."""
        root = self.shard_root()
        if not root.is_dir() or self._one("SELECT count(*) FROM jobs WHERE status = 'running'")[0]:
            return []
        live = {
            Path(p).parents[1].resolve()
            for (p,) in self.con.execute("SELECT path FROM shards").fetchall()
        }
        removed = []
        for model_dir in (d for d in root.iterdir() if d.is_dir()):
            for job_dir in (d for d in model_dir.iterdir() if d.is_dir()):
                if job_dir.resolve() not in live:
                    shutil.rmtree(job_dir, ignore_errors=True)
                    removed.append(job_dir.name)
            if not any(model_dir.iterdir()):
                model_dir.rmdir()
        return removed

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
                "crc32": pa.array([_crc32(Path(f[0])) for f in files], pa.int64()),
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
                    """INSERT INTO shards
                           (model_id, job_id, path, layer, n_runs, bytes, created_at, crc32)
                       SELECT ?, ?, path, layer, ?, bytes, now(), crc32 FROM shard_tbl""",
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
