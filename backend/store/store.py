"""The activation store: one DuckDB file, every SQL string of the project, numpy in/out.

One ``Store`` owns a DuckDB database instance; ``cursor()`` gives another ``Store`` on the
same database for another thread (DuckDB's MVCC keeps readers consistent while the worker
writes). A run becomes visible in one transaction together with its tokens and all layers.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import threading
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from backend.capture.records import CapturedRun, prompt_id
from backend.errors import LayerScopeError
from backend.prompts import dedupe, validate_set_name
from backend.store import codec
from backend.store.schema import SCHEMA, SCHEMA_VERSION

log = logging.getLogger(__name__)
DEFAULT_DB = Path("cache") / "layerscope.duckdb"
_SLICES_PER_RUN = 2  #: Store.rows slices blobs in SQL up to this many units per run


def default_db_path() -> Path:
    return Path(os.environ.get("LAYERSCOPE_DB") or DEFAULT_DB)


def _missing(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _lock_message(path: Path, err: Exception) -> str:
    m = re.search(r"PID (\d+)", str(err))
    who = f" (process {m.group(1)})" if m else ""
    return (
        f"The cache {path} is in use by another process{who}, probably the LayerScope app. "
        f"Stop it, or point this command at another file with --db PATH."
    )


def _disk_full(e: BaseException) -> bool:
    return "no space left" in str(e).lower() or getattr(e, "errno", None) == 28


def disk_full_message(path) -> str:
    where = Path(path).parent if path not in (None, ":memory:") else Path(".")
    try:
        free = shutil.disk_usage(where).free / 2**20
    except OSError:
        free = 0.0
    return (
        f"The disk holding {path} is full ({free:.1f} MB free); nothing stored so far is lost. "
        "Free some space (or delete sets you no longer need) and run the same command again, "
        "or use --db on another disk."
    )


def _remove_files(paths: list[str]) -> None:
    """Remove unregistered shard files, then their directories once empty."""
    dirs = set()
    for p in paths:
        Path(p).unlink(missing_ok=True)
        dirs.update(Path(p).parents[:2])  # layer=K/ and the job's directory
    for d in sorted(dirs, key=lambda d: -len(d.parts)):
        with contextlib.suppress(OSError):  # not empty (another layer's files) or gone
            d.rmdir()


WAL_CHECKPOINT = "256MB"  #: automatic checkpoint threshold (see Store.__init__)
#: block size of a new cache file (an existing file keeps its own). DuckDB's default, 256 KB,
#: left ~5 MB of part-filled blocks in every file (tables, columns and metadata each end in
#: a block of their own): 2.8 bytes per value for 96 short prompts instead of 2.0.
BLOCK_SIZE = 65536
DUCKDB_VACUUM_TASKS = 100  #: DuckDB's default max_vacuum_tasks, used by deletes' checkpoints


class Store:
    """DuckDB-backed cache of models, prompt sets, runs, tokens and activations."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False, _con=None):
        self.path = Path(path) if path not in (None, ":memory:") else path or default_db_path()
        self._lock = threading.Lock()
        self.read_only = read_only
        if _con is not None:
            self.con = _con
            self._root = False
            return
        self._root = True
        target = ":memory:" if self.path == ":memory:" else str(self.path)
        if target != ":memory:":
            if self.path.is_dir():
                raise LayerScopeError(f"The cache path {self.path} is a folder; give a file name.")
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                file = next(p for p in self.path.parents if p.exists())
                raise LayerScopeError(
                    f"Cannot put the cache at {self.path}: {file} is a file, not a folder."
                ) from None
            except OSError as e:
                raise LayerScopeError(
                    f"Cannot create the folder for the cache {self.path}: {e.strerror or e}."
                ) from None
        try:
            config = {} if read_only else {"default_block_size": str(BLOCK_SIZE)}
            self.con = duckdb.connect(target, read_only=read_only, config=config)
        except duckdb.IOException as e:
            if "lock" in str(e).lower():
                raise LayerScopeError(_lock_message(self.path, e)) from None
            raise LayerScopeError(f"Cannot open the cache {self.path}: {_first_line(e)}") from None
        except duckdb.Error as e:  # not a DuckDB file, truncated, wrong version...
            raise LayerScopeError(
                f"The cache {self.path} cannot be read ({_first_line(e)}); it is not a DuckDB "
                "file or is damaged. Move it aside (nothing else is touched) or use --db PATH."
            ) from None
        # fp16 blobs barely compress (1.84 vs 2.0 bytes/value) but compressed blob segments
        # must be decoded whole: a run's 13 layers took 0.35 s to read instead of 0.01 s.
        self.con.execute("SET force_compression = 'uncompressed'")
        if not read_only:
            # Each batch is its own transaction. With DuckDB's default 16 MB WAL threshold,
            # frequent automatic checkpoints leave half-filled blob blocks behind (the file
            # grew to 1.7x its blobs); jobs checkpoint once at the end instead (1.01x).
            self.con.execute(f"SET wal_autocheckpoint = '{WAL_CHECKPOINT}'")
            # A checkpoint's vacuum merged the new row groups (one per ~256 MB of batches)
            # into the table's earlier ones, i.e. rewrote every stored blob through memory:
            # the peak of a job grew with the table (+0.9 GB for 1 GB of blobs, 20 s instead
            # of 2.5 s, the file grew by the rewritten copy). Appends never need it; deletes
            # turn it back on for their own checkpoint (``_checkpoint(vacuum=True)``).
            self.con.execute("SET max_vacuum_tasks = 0")
            self._migrate()
            # only one process can open the file for writing, so jobs still marked as
            # running belong to a process that died (kill -9, power loss). Housekeeping: on a
            # full disk it waits for the next open, so reads and `delete` still work.
            try:
                self.mark_interrupted_jobs()
            except duckdb.Error as e:
                if not _disk_full(e):
                    raise

    # -- lifecycle ------------------------------------------------------------------------
    def cursor(self) -> Store:
        """A Store on the same database with its own DuckDB cursor (one per thread)."""
        return Store(self.path, _con=self.con.cursor())

    def close(self) -> None:
        con, self.con = getattr(self, "con", None), None
        if con is not None:
            con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _migrate(self) -> None:
        for stmt in SCHEMA:
            self.con.execute(stmt)
        row = self._one("SELECT value FROM meta WHERE key = 'schema_version'")
        if row is None:
            self.con.execute("INSERT INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
        elif int(row[0]) > SCHEMA_VERSION:
            raise LayerScopeError(
                f"The cache {self.path} was written by a newer LayerScope (schema {row[0]})."
            )
        elif int(row[0]) < SCHEMA_VERSION:  # every change so far only added tables
            self.con.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION)]
            )

    def _one(self, sql: str, params: list | None = None):
        """First row or None; always drains the result (DuckDB 2 refuses half-read results)."""
        rows = self.con.execute(sql, params or []).fetchall()
        return rows[0] if rows else None

    def _df(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return self.con.execute(sql, params or []).df()

    @contextmanager
    def _transaction(self, locked: bool = False):
        """One transaction on this cursor: commit, or roll back and raise the first error. A
        full disk becomes a LayerScopeError saying so (nothing committed is lost).
        ``locked``: the caller already holds ``self._lock`` (it registered Arrow tables)."""
        with nullcontext() if locked else self._lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
                self.con.execute("COMMIT")
            except BaseException as e:
                with suppress(duckdb.Error):  # a failed COMMIT has already ended it
                    self.con.execute("ROLLBACK")
                if _disk_full(e):
                    raise LayerScopeError(disk_full_message(self.path)) from None
                raise

    def schema_version(self) -> int:
        return int(self._one("SELECT value FROM meta WHERE key='schema_version'")[0])

    # -- models ---------------------------------------------------------------------------
    def upsert_model(self, info) -> None:
        self.con.execute(
            """INSERT INTO models (model_id, ref, name, architecture, n_layers, d_model,
                   vocab_size, has_lm_head, is_causal, revision, info_json, last_used)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())
               ON CONFLICT (model_id) DO UPDATE SET ref = excluded.ref, name = excluded.name,
                   info_json = excluded.info_json, last_used = now()""",
            [
                info.model_id,
                info.ref,
                info.name,
                info.architecture,
                info.n_layers,
                info.d_model,
                info.vocab_size,
                info.has_lm_head,
                info.is_causal,
                info.revision,
                info.to_json(),
            ],
        )

    def list_models(self) -> pd.DataFrame:
        return self._df(
            """SELECT m.model_id, m.ref, m.name, m.architecture, m.n_layers, m.d_model,
                      m.has_lm_head, m.last_used,
                      count(DISTINCT r.run_id) AS n_runs,
                      (coalesce(sum(s.bytes), 0) + coalesce(any_value(sh.bytes), 0))::BIGINT
                        AS bytes
               FROM models m LEFT JOIN runs r USING (model_id)
               LEFT JOIN (SELECT run_id, sum(octet_length(data)) AS bytes
                          FROM activations GROUP BY run_id) s USING (run_id)
               LEFT JOIN (SELECT model_id, sum(bytes) AS bytes FROM shards GROUP BY model_id) sh
                 USING (model_id)
               GROUP BY ALL ORDER BY m.last_used DESC NULLS LAST"""
        )

    def get_model(self, model_id: str) -> dict | None:
        df = self._df("SELECT * FROM models WHERE model_id = ?", [model_id])
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row.update(json.loads(row.pop("info_json") or "{}"))
        return row

    def find_model(self, ref_or_id: str) -> dict | None:
        """The most recently used model with this id or ref."""
        row = self._one(
            """SELECT model_id FROM models WHERE model_id = ? OR ref = ? OR name = ?
               ORDER BY last_used DESC NULLS LAST LIMIT 1""",
            [ref_or_id, ref_or_id, ref_or_id],
        )
        return self.get_model(row[0]) if row else None

    # -- prompt sets ----------------------------------------------------------------------
    def save_prompt_set(
        self, name: str, prompts: pd.DataFrame, description: str = "", source: str = ""
    ) -> int:
        """Store a named set (columns text, optional label, group, token_labels, prompt_id: by
        default the hash of the text; steered runs give their own so that a set of them never
        picks up a plain run of the same text). Replaces the
        set's membership if the name exists; runs are never touched. Returns the prompt count."""
        name = validate_set_name(name)
        if prompts is None or len(prompts) == 0:
            raise LayerScopeError(f"The prompt set '{name}' is empty.")
        prompts, _ = dedupe(pd.DataFrame(prompts))  # the count returned is of distinct texts
        df = pd.DataFrame({"text": prompts["text"].astype(str).tolist()})
        for col in ("label", "group"):
            vals = prompts.get(col)
            df[col] = [
                None if _missing(v) else str(v)
                for v in (vals if vals is not None else [None] * len(df))
            ]
        tl = prompts["token_labels"] if "token_labels" in prompts else [None] * len(df)
        df["token_labels"] = [None if _missing(v) else [str(x) for x in v] for v in tl]
        df["prompt_id"] = (  # given ids: texts whose runs are not plain captures (steering)
            prompts["prompt_id"].astype(str).tolist()
            if "prompt_id" in prompts
            else [prompt_id(t) for t in df["text"]]
        )
        df["idx"] = np.arange(len(df), dtype=np.int32)
        df["set_name"] = name
        try:
            with self._transaction():
                self.con.register("new_prompts", df)
                self.con.execute(
                    """INSERT INTO prompts SELECT DISTINCT prompt_id, text FROM new_prompts
                       ON CONFLICT DO NOTHING"""
                )
                self.con.execute("DELETE FROM set_prompts WHERE set_name = ?", [name])
                self.con.execute(
                    """INSERT INTO set_prompts SELECT set_name, idx, prompt_id, label, "group",
                       token_labels FROM new_prompts"""
                )
                self.con.execute(
                    """INSERT INTO prompt_sets VALUES (?, ?, ?, now())
                       ON CONFLICT (set_name) DO UPDATE SET description = excluded.description,
                       source = excluded.source""",
                    [name, description, source],
                )
        finally:
            self.con.unregister("new_prompts")
        return len(df)

    def list_sets(self) -> pd.DataFrame:
        return self._df(
            """SELECT s.set_name, s.description, s.source, count(sp.idx) AS n_prompts,
                      count(sp.label) > 0 AS has_labels,
                      count(sp.token_labels) > 0 AS has_token_labels
               FROM prompt_sets s LEFT JOIN set_prompts sp USING (set_name)
               GROUP BY ALL ORDER BY s.set_name"""
        )

    def get_set(self, name: str) -> pd.DataFrame:
        df = self._df(
            """SELECT sp.idx, sp.prompt_id, p.text, sp.label, sp.grp AS "group", sp.token_labels
               FROM set_prompts sp JOIN prompts p USING (prompt_id)
               WHERE sp.set_name = ? ORDER BY sp.idx""",
            [name],
        )
        df["token_labels"] = [None if _missing(v) else list(v) for v in df["token_labels"]]
        return df

    def delete_set(self, name: str) -> None:
        """Forget the set's membership and the runs no other set or model view needs."""
        with self._transaction():
            self.con.execute(
                """CREATE OR REPLACE TEMP TABLE doomed AS
                   SELECT r.run_id FROM runs r JOIN set_prompts sp USING (prompt_id)
                   WHERE sp.set_name = ? AND r.kind = 'prompt' AND r.prompt_id NOT IN
                     (SELECT prompt_id FROM set_prompts WHERE set_name <> ?)""",
                [name, name],
            )
            dead = self._delete_runs_in_doomed()
            self.con.execute("DELETE FROM set_prompts WHERE set_name = ?", [name])
            self.con.execute("DELETE FROM prompt_sets WHERE set_name = ?", [name])
        _remove_files(dead)
        self._checkpoint(vacuum=True)

    # -- runs -----------------------------------------------------------------------------
    def existing_runs(self, run_ids: list[str]) -> set[str]:
        if not run_ids:
            return set()
        rows = self.con.execute(
            "SELECT run_id FROM runs WHERE run_id IN (SELECT unnest(?))", [list(run_ids)]
        ).fetchall()
        return {r[0] for r in rows}

    def ingest(self, model_id: str, runs: list[CapturedRun]) -> None:
        """Write runs with their tokens and every layer in one transaction."""
        if not runs:
            return
        run_rows, tok_cols, act = (
            [],
            {k: [] for k in ("run_id", "pos", "token_id", "token", "s", "e", "sp")},
            {k: [] for k in ("run_id", "layer", "n_tokens", "d_model", "codec")},
        )
        # every blob of the batch is encoded straight into one buffer that Arrow wraps without
        # a copy (a list of bytes objects, then pa.array, held the batch's vectors twice more)
        blob_sizes = [2 * r.hidden[0].size for r in runs for _ in range(len(r.hidden))]
        offsets = np.zeros(len(blob_sizes) + 1, dtype=np.int64)
        np.cumsum(blob_sizes, out=offsets[1:])
        data = np.empty(int(offsets[-1]), dtype=np.uint8)
        row = 0
        for r in runs:
            _, n, d = r.hidden.shape
            run_rows.append(
                (
                    r.run_id,
                    model_id,
                    r.prompt_id,
                    r.text,
                    r.kind,
                    json.dumps(r.settings, sort_keys=True),
                    n,
                    r.n_prompt_tokens if r.n_prompt_tokens is not None else n,
                    r.truncated,
                    r.parent,
                    r.sample,
                    r.seed,
                )
            )
            tok_cols["run_id"] += [r.run_id] * n
            tok_cols["pos"] += list(range(n))
            tok_cols["token_id"] += list(r.token_ids)
            tok_cols["token"] += list(r.tokens)
            tok_cols["s"] += [o[0] for o in r.offsets]
            tok_cols["e"] += [o[1] for o in r.offsets]
            tok_cols["sp"] += list(r.special)
            for layer in range(len(r.hidden)):
                c, arr = codec.encode_array(r.hidden[layer], f"layer {layer} of run {r.run_id}")
                data[offsets[row] : offsets[row + 1]] = arr.reshape(-1).view(np.uint8)
                row += 1
                for k, v in zip(act, (r.run_id, layer, n, d, c)):
                    act[k].append(v)
        runs_tbl = pa.table(
            list(zip(*run_rows)),
            names=[
                "run_id",
                "model_id",
                "prompt_id",
                "text",
                "kind",
                "settings",
                "n_tokens",
                "n_prompt_tokens",
                "truncated",
                "parent",
                "sample",
                "seed",
            ],
        )
        tok_tbl = pa.table(tok_cols)
        act_tbl = pa.table(
            {
                **act,
                "data": pa.Array.from_buffers(
                    pa.large_binary(), row, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
                ),
            }
        )
        with self._lock:
            for name, tbl in (("runs_tbl", runs_tbl), ("tok_tbl", tok_tbl), ("act_tbl", act_tbl)):
                self.con.register(name, tbl)
            try:
                with self._transaction(locked=True):
                    self.con.execute(
                        """INSERT INTO prompts SELECT DISTINCT prompt_id, text FROM runs_tbl
                           ON CONFLICT DO NOTHING"""
                    )
                    self.con.execute(
                        """INSERT INTO runs SELECT run_id, model_id, prompt_id, kind, settings,
                           n_tokens, n_prompt_tokens, truncated, parent, sample, seed,
                           now() FROM runs_tbl ON CONFLICT DO NOTHING"""
                    )
                    self.con.execute("INSERT INTO tokens SELECT * FROM tok_tbl")
                    self.con.execute("INSERT INTO activations SELECT * FROM act_tbl")
            finally:
                for name in ("runs_tbl", "tok_tbl", "act_tbl"):
                    self.con.unregister(name)

    def set_runs(self, set_name: str, model_id: str) -> pd.DataFrame:
        """The latest prompt run of each prompt of the set for this model, in set order."""
        return self._df(
            """SELECT r.run_id, sp.idx, sp.prompt_id, p.text, sp.label, sp.grp AS "group",
                      r.n_tokens, r.truncated
               FROM set_prompts sp JOIN prompts p USING (prompt_id)
               JOIN runs r ON r.prompt_id = sp.prompt_id AND r.model_id = ? AND r.kind = 'prompt'
               WHERE sp.set_name = ?
               QUALIFY row_number() OVER (PARTITION BY sp.idx ORDER BY r.created_at DESC) = 1
               ORDER BY sp.idx""",
            [model_id, set_name],
        )

    def runs_for_model(self, model_id: str, kind: str | None = None) -> pd.DataFrame:
        return self._df(
            """SELECT r.*, p.text FROM runs r JOIN prompts p USING (prompt_id)
               WHERE r.model_id = ? AND (? IS NULL OR r.kind = ?) ORDER BY r.created_at""",
            [model_id, kind, kind],
        )

    def request_runs(self, parents: list[str], max_samples: int | None = None) -> pd.DataFrame:
        """The sampled runs of the given requests (``parent`` ids), in the order of ``parents``
        and by sample index. Columns: run_id, parent, sample, seed, n_tokens, n_prompt_tokens,
        truncated, text."""
        parents = list(parents)
        return self._df(
            """SELECT r.run_id, r.parent, r.sample, r.seed, r.n_tokens, r.n_prompt_tokens,
                      r.truncated, p.text
               FROM (SELECT unnest(?) AS parent, generate_subscripts(?, 1) AS k) q
               JOIN runs r USING (parent) JOIN prompts p USING (prompt_id)
               WHERE r.kind = 'generation' AND (? IS NULL OR r.sample < ?)
               ORDER BY q.k, r.sample""",
            [parents, parents, max_samples, max_samples],
        )

    def generated_tokens(self, run_ids: list[str]) -> pd.DataFrame:
        """Tokens after the prompt of each run. Columns: run_id, pos, token_id, token,
        is_special; ordered by run (as given) and position."""
        run_ids = list(run_ids)
        return self._df(
            """SELECT t.run_id, t.pos, t.token_id, t.token, t.is_special
               FROM (SELECT unnest(?) AS run_id, generate_subscripts(?, 1) AS k) q
               JOIN runs r USING (run_id) JOIN tokens t USING (run_id)
               WHERE t.pos >= r.n_prompt_tokens
               ORDER BY q.k, t.pos""",
            [run_ids, run_ids],
        )

    def sampled_requests(self, model_id: str) -> pd.DataFrame:
        """What has been sampled for a model: one row per request (prompt x settings).
        Columns: parent, text, settings (JSON, without the sample index), samples."""
        return self._df(
            """SELECT r.parent, any_value(p.text) AS text,
                      any_value(json_merge_patch(r.settings, '{"sample": null}'))::VARCHAR
                        AS settings,
                      count(*) AS samples
               FROM runs r JOIN prompts p USING (prompt_id)
               WHERE r.model_id = ? AND r.kind = 'generation'
               GROUP BY r.parent ORDER BY min(r.created_at)""",
            [model_id],
        )

    def n_layers_of(self, run_id: str) -> int:
        """How many layers (embeddings included) a run has stored; 0 if none."""
        row = self._one(
            """SELECT coalesce((SELECT max(layer) + 1 FROM activations WHERE run_id = ?),
                               (SELECT max(s.layer) + 1 FROM run_shards r JOIN shards s
                                  USING (job_id) WHERE r.run_id = ?))""",
            [run_id, run_id],
        )
        return int(row[0]) if row and row[0] is not None else 0

    def prompt_sets_of(self, prompt_id: str) -> pd.DataFrame:
        """Every set holding this prompt. Columns: set_name, idx, label, group."""
        return self._df(
            """SELECT set_name, idx, label, grp AS "group" FROM set_prompts
               WHERE prompt_id = ? ORDER BY set_name""",
            [prompt_id],
        )

    def get_run(self, run_id: str) -> dict | None:
        df = self._df(
            """SELECT r.*, p.text FROM runs r JOIN prompts p USING (prompt_id)
                         WHERE r.run_id = ?""",
            [run_id],
        )
        if df.empty:
            return None
        row = df.iloc[0].to_dict()
        row["settings"] = json.loads(row["settings"] or "{}")
        return row

    def tokens(self, run_id: str) -> pd.DataFrame:
        return self._df(
            """SELECT pos, token_id, token, char_start AS start, char_end AS "end", is_special
               FROM tokens WHERE run_id = ? ORDER BY pos""",
            [run_id],
        )

    def delete_model_runs(self, model_id: str) -> None:
        with self._transaction():
            self.con.execute(
                "CREATE OR REPLACE TEMP TABLE doomed AS SELECT run_id FROM runs WHERE model_id = ?",
                [model_id],
            )
            dead = self._delete_runs_in_doomed()
            self.con.execute("DELETE FROM models WHERE model_id = ?", [model_id])
        _remove_files(dead)
        self._checkpoint(vacuum=True)

    def checkpoint(self) -> None:
        """Write the WAL into the file (after a job: packs the blobs densely)."""
        self._checkpoint()

    def _checkpoint(self, vacuum: bool = False) -> None:
        """CHECKPOINT; ``vacuum``: also compact row groups that lost rows (after a delete),
        which rewrites the table's blobs (see ``__init__``: off otherwise)."""
        if not vacuum:
            self.con.execute("CHECKPOINT")
            return
        self.con.execute(f"SET max_vacuum_tasks = {DUCKDB_VACUUM_TASKS}")
        try:
            self.con.execute("CHECKPOINT")
        finally:
            self.con.execute("SET max_vacuum_tasks = 0")

    def _delete_runs_in_doomed(self) -> list[str]:
        """Delete the runs listed in temp table ``doomed``; unregister the shard files no
        remaining run needs and return their paths (removed by the caller after COMMIT)."""
        for table in ("activations", "tokens", "run_shards", "runs"):
            self.con.execute(f"DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM doomed)")
        self.con.execute("DROP TABLE doomed")
        dead = self.con.execute(
            """DELETE FROM shards WHERE job_id NOT IN (SELECT DISTINCT job_id FROM run_shards)
               RETURNING path"""
        ).fetchall()
        return [r[0] for r in dead]

    # -- activations ----------------------------------------------------------------------
    def _blobs(self, sql: str, params: list) -> pa.Table:
        return self.con.sql(sql, params=params).to_arrow_table()

    def run_layers(self, run_id: str) -> np.ndarray:
        """All layers of one run: float32 (n_layers + 1, n_tokens, d_model)."""
        paths = self._shard_paths([run_id])
        if paths:
            t = self._blobs(
                """SELECT layer, n_tokens, d_model, codec, data
                   FROM read_parquet(?, hive_partitioning = true)
                   WHERE run_id = ? ORDER BY layer""",
                [paths, run_id],
            )
        else:
            t = self._blobs(
                """SELECT layer, n_tokens, d_model, codec, data FROM activations
                   WHERE run_id = ? ORDER BY layer""",
                [run_id],
            )
        if t.num_rows == 0:
            raise LayerScopeError(f"No activations stored for run {run_id}.")
        n, d = t["n_tokens"][0].as_py(), t["d_model"][0].as_py()
        out = np.empty((t.num_rows, n, d), dtype=np.float32)
        for i, (c, blob) in enumerate(zip(t["codec"].to_pylist(), t["data"].to_pylist())):
            codec.decode_into(out[i], c, blob)
        return out

    def _layer_blobs(self, run_ids: list[str], layer: int) -> pa.Table:
        """[k (1-based request index), n_tokens, d_model, codec, data]: one whole blob per
        requested run at ``layer``, in DuckDB's order; every run must have it."""
        run_ids = list(run_ids)
        return self._join_layer(
            """SELECT q.k, a.n_tokens, a.d_model, a.codec, a.data
               FROM (SELECT unnest(?) AS run_id, generate_subscripts(?, 1) AS k) q""",
            [run_ids, run_ids],
            run_ids,
            layer,
        )

    def _join_layer(self, select: str, params: list, run_ids: list[str], layer: int) -> pa.Table:
        """``select`` (a request subquery ``q`` with run_id and k; ``params`` its parameters)
        joined with every stored blob ``a`` of ``layer``, Parquet shards read in place; every
        requested run must have one."""
        paths = self._shard_paths(run_ids, layer)
        if paths:  # some runs live in Parquet shards: read those files in place
            t = self._blobs(
                select
                + """ JOIN (SELECT run_id, n_tokens, d_model, codec, data FROM activations
                            WHERE layer = ?
                            UNION ALL
                            SELECT run_id, n_tokens, d_model, codec, data
                            FROM read_parquet(?, hive_partitioning = true)
                            WHERE run_id IN (SELECT run_id FROM run_shards)) a
                      USING (run_id)""",
                [*params, layer, paths],
            )
        else:
            t = self._blobs(
                select + " JOIN activations a USING (run_id) WHERE a.layer = ?", [*params, layer]
            )
        if t.num_rows != len(run_ids):
            found = {run_ids[k - 1] for k in t["k"].to_pylist()}
            missing = len(set(run_ids) - found)
            raise LayerScopeError(f"{missing} of {len(run_ids)} runs have no layer {layer} stored.")
        return t

    def layer(self, run_ids: list[str], layer: int) -> tuple[np.ndarray, pd.DataFrame]:
        """One layer for many runs: float32 (total_tokens, d_model) and index [run_id, pos].

        Rows come back unsorted (sorting 100k tokens of blobs in DuckDB cost more than the
        read) and are decoded straight into request order."""
        t = self._layer_blobs(run_ids, layer)
        order = np.argsort(t["k"].to_numpy(), kind="stable")  # DuckDB row of request i
        ns_db = t["n_tokens"].to_numpy().astype(np.int64)
        ns = ns_db[order]
        d = int(t["d_model"][0].as_py()) if len(ns) else 0
        out = np.empty((int(ns.sum()), d), dtype=np.float32)
        dst = np.r_[0, np.cumsum(ns)]
        codecs = t["codec"].to_pylist()
        if len(ns) and all(c == codec.F16 for c in codecs):
            # every blob fp16: view the Arrow column's contiguous buffer, copy runs in order
            flat = codec.f16_view(t["data"].combine_chunks(), int(ns_db.sum()), d)
            codec.gather_f16(out, flat, dst, np.r_[0, np.cumsum(ns_db)], order)
        else:
            blobs = t["data"].to_pylist()
            for i, j in enumerate(order):
                codec.decode_into(out[dst[i] : dst[i + 1]], codecs[j], blobs[j])
        index = pd.DataFrame(
            {
                "run_id": np.repeat(np.asarray(run_ids, dtype=object), ns),
                "pos": np.concatenate([np.arange(n) for n in ns]) if len(ns) else [],
            }
        )
        return out, index

    def rows(self, run_ids: list[str], positions, layer: int) -> np.ndarray:
        """Chosen token vectors of one layer: float32 (len(run_ids), d_model), row i = position
        ``positions[i]`` of run ``run_ids[i]`` (negative counts from the end: -1 = the last
        token). A few units per run: each blob is sliced in SQL, so only those rows leave
        DuckDB (the last token of 256 GPT-2 runs is 0.4 MB; their whole layer 30 MB). More
        than ``_SLICES_PER_RUN`` per run: one slice per unit costs more than the whole blob
        (4,000 units of 65 runs: 0.64 s vs 0.05 s), so each run's blob is read once and the
        units' rows gathered before converting to float32."""
        run_ids = list(run_ids)
        pos = [int(p) for p in positions]
        if len(pos) != len(run_ids):
            raise ValueError("one position per run id")
        if not run_ids:
            return np.empty((0, 0), dtype=np.float32)
        codes, uniq = pd.factorize(pd.Series(run_ids, dtype=object))
        if len(pos) > _SLICES_PER_RUN * len(uniq):
            return self._rows_from_blobs(uniq.tolist(), codes, np.asarray(pos, np.int64), layer)
        # 2 bytes per value for both codecs (fp16, bf16 bits); p = the position from the start
        select = """SELECT q.k, q.p, a.n_tokens, a.d_model, a.codec,
                       array_slice(a.data,
                           (CASE WHEN q.p < 0 THEN a.n_tokens + q.p ELSE q.p END)
                               * a.d_model * 2 + 1,
                           (CASE WHEN q.p < 0 THEN a.n_tokens + q.p ELSE q.p END + 1)
                               * a.d_model * 2) AS data
                   FROM (SELECT unnest(?) AS run_id, unnest(?) AS p,
                                generate_subscripts(?, 1) AS k) q"""
        t = self._join_layer(select, [run_ids, pos, run_ids], run_ids, layer)
        p, n = t["p"].to_numpy(), t["n_tokens"].to_numpy()
        bad = (p >= n) | (p < -n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise LayerScopeError(
                f"Position {int(p[i])} is outside run {run_ids[t['k'][i].as_py() - 1]} "
                f"({int(n[i])} tokens)."
            )
        d = int(t["d_model"][0].as_py())
        order = np.argsort(t["k"].to_numpy(), kind="stable")  # DuckDB row of request i
        codecs = t["codec"].to_pylist()
        if all(c == codec.F16 for c in codecs):
            return codec.f16_view(t["data"].combine_chunks(), len(run_ids), d)[order].astype(
                np.float32
            )
        out = np.empty((len(run_ids), d), dtype=np.float32)
        blobs = t["data"].to_pylist()
        for i, j in enumerate(order):
            codec.decode_into(out[i : i + 1], codecs[j], blobs[j])
        return out

    def _rows_from_blobs(
        self, uniq: list[str], codes: np.ndarray, pos: np.ndarray, layer: int
    ) -> np.ndarray:
        """``rows`` for many units per run: each run's whole blob once, the units' rows
        gathered in half precision, only those converted to float32."""
        t = self._layer_blobs(uniq, layer)
        at = np.empty(len(uniq), np.int64)  # DuckDB row of each unique run
        at[t["k"].to_numpy() - 1] = np.arange(t.num_rows)
        n = t["n_tokens"].to_numpy().astype(np.int64)[at][codes]
        bad = (pos >= n) | (pos < -n)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise LayerScopeError(
                f"Position {int(pos[i])} is outside run {uniq[codes[i]]} ({int(n[i])} tokens)."
            )
        pos = np.where(pos < 0, pos + n, pos)
        d = int(t["d_model"][0].as_py())
        codecs = t["codec"].to_pylist()
        if all(c == codec.F16 for c in codecs):
            ns_db = t["n_tokens"].to_numpy().astype(np.int64)
            flat = codec.f16_view(t["data"].combine_chunks(), int(ns_db.sum()), d)
            start = np.r_[0, np.cumsum(ns_db)][:-1]  # each DuckDB row's first vector
            return flat[start[at][codes] + pos].astype(np.float32)
        out = np.empty((len(pos), d), dtype=np.float32)
        blobs = t["data"].to_pylist()
        for u in range(len(uniq)):
            mine = np.flatnonzero(codes == u)
            j = at[u]
            whole = codec.decode(codecs[j], blobs[j], int(t["n_tokens"][j].as_py()), d)
            out[mine] = whole[pos[mine]]
        return out

    def token_table(self, run_ids: list[str]) -> pd.DataFrame:
        """The tokens of many runs in one query: DataFrame[k, run_id, pos, token, is_special],
        k = the run's index in ``run_ids`` (a run asked twice comes twice), ordered by (k, pos)."""
        return self._df(
            """SELECT q.k - 1 AS k, q.run_id, t.pos, t.token, t.is_special
               FROM (SELECT unnest(?) AS run_id, generate_subscripts(?, 1) AS k) q
               JOIN tokens t USING (run_id) ORDER BY q.k, t.pos""",
            [list(run_ids), list(run_ids)],
        )

    def pooled(
        self, run_ids: list[str], how: str = "last", layers: list[int] | None = None
    ) -> np.ndarray:
        """Pooled vector per run and layer: float32 (n_layers_sel, n_runs, d_model).
        ``how``: 'last' (last token) or 'mean' (mean over tokens, special tokens excluded)."""
        if how not in ("last", "mean"):
            raise ValueError("how must be 'last' or 'mean'")
        if layers is None:
            layers = list(range(self.n_layers_of(run_ids[0])))
        if how == "last":  # only the last position of each run leaves DuckDB
            last = [-1] * len(run_ids)
            return np.stack([self.rows(run_ids, last, layer) for layer in layers])
        out, keep = None, None
        for li, layer in enumerate(layers):
            x, idx = self.layer(run_ids, layer)
            if keep is None:  # the same tokens at every layer
                keep = self._non_special_mask(run_ids, len(x))
            # each requested run's block starts at pos 0 (a run may be requested twice: a set
            # can hold the same prompt twice)
            starts = np.r_[np.flatnonzero(idx["pos"].to_numpy() == 0), len(idx)]
            if out is None:
                out = np.empty((len(layers), len(run_ids), x.shape[1]), dtype=np.float32)
            for j in range(len(run_ids)):
                a, b = starts[j], starts[j + 1]
                m = keep[a:b]
                out[li, j] = x[a:b][m].mean(0) if m.any() else x[a:b].mean(0)
        return out

    def special_mask(self, run_ids: list[str], total: int) -> np.ndarray:
        """(total,) bool: True at special tokens (<bos>, ...), in ``layer(run_ids, ...)`` order."""
        return ~self._non_special_mask(run_ids, total)

    def _non_special_mask(self, run_ids: list[str], total: int) -> np.ndarray:
        rows = self.con.execute(
            """SELECT NOT t.is_special FROM (SELECT unnest(?) AS run_id,
                   generate_subscripts(?, 1) AS k) q JOIN tokens t USING (run_id)
               ORDER BY q.k, t.pos""",
            [list(run_ids), list(run_ids)],
        ).fetchall()
        mask = np.array([r[0] for r in rows], dtype=bool)
        assert len(mask) == total
        return mask

    def export_parquet(
        self, set_name: str, model_id: str, path: str | Path, layer: int | None = None
    ) -> int:
        """Write one row per (run, layer, pos) with the vector as float32 list. Returns rows."""
        runs = self.set_runs(set_name, model_id)
        if runs.empty:
            raise LayerScopeError(f"No runs of set '{set_name}' for this model to export.")
        import pyarrow.parquet as pq

        info = self.get_model(model_id)
        layers = [layer] if layer is not None else list(range(info["n_layers"] + 1))
        meta = runs.set_index("run_id")
        writer, rows = None, 0
        try:
            for li in layers:
                x, idx = self.layer(runs["run_id"].tolist(), li)
                toks = self._df(
                    """SELECT t.run_id, t.pos, t.token FROM (SELECT unnest(?) AS run_id) q
                       JOIN tokens t USING (run_id)""",
                    [runs["run_id"].tolist()],
                )
                idx = idx.merge(toks, on=["run_id", "pos"], how="left")
                d = x.shape[1]
                tbl = pa.table(
                    {
                        "run_id": idx["run_id"],
                        "prompt_idx": meta.loc[idx["run_id"], "idx"].to_numpy(),
                        "label": meta.loc[idx["run_id"], "label"].to_numpy(),
                        "layer": np.full(len(x), li, dtype=np.int16),
                        "pos": idx["pos"].to_numpy(np.int32),
                        "token": idx["token"],
                        "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), d),
                    }
                )
                if writer is None:
                    writer = pq.ParquetWriter(str(path), tbl.schema)
                writer.write_table(tbl)
                rows += len(x)
        finally:
            if writer is not None:
                writer.close()
        return rows

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

    # -- jobs (rows only; the worker owns the logic) --------------------------------------
    def job_put(self, job: dict) -> None:
        self.con.execute(
            """INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now(),
                   now(), ?)
               ON CONFLICT (job_id) DO UPDATE SET status = excluded.status,
                   tokens_total = excluded.tokens_total, tokens_done = excluded.tokens_done,
                   runs_total = excluded.runs_total, runs_done = excluded.runs_done,
                   runs_cached = excluded.runs_cached, message = excluded.message,
                   updated_at = now(), pid = excluded.pid""",
            [
                job["job_id"],
                job["kind"],
                json.dumps(job["spec"]),
                job["status"],
                job.get("tokens_total", 0),
                job.get("tokens_done", 0),
                job.get("runs_total", 0),
                job.get("runs_done", 0),
                job.get("runs_cached", 0),
                job.get("message", ""),
                job.get("pid", os.getpid()),
            ],
        )

    def jobs(self, limit: int = 50) -> pd.DataFrame:
        df = self._df("SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", [limit])
        df["spec"] = [json.loads(s) for s in df["spec"]]
        return df

    def mark_interrupted_jobs(self) -> int:
        """Jobs left 'running'/'queued' by a dead process become 'interrupted'."""
        n = self.con.execute(
            """UPDATE jobs SET status = 'interrupted', message = 'the process running this job '
                 || 'stopped before it finished; completed runs are kept, submit it again '
                 || 'to compute the rest' WHERE status IN ('running', 'queued')
               RETURNING job_id"""
        ).fetchall()
        return len(n)
