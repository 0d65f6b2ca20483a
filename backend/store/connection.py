"""The cache's connection: opening the DuckDB file (settings, schema, migration), cursors,
the one transaction helper, and the messages for a locked, damaged or full file.

One ``Store`` owns a DuckDB database instance; ``cursor()`` gives another ``Store`` on the
same database for another thread (DuckDB's MVCC keeps readers consistent while the worker
writes). A run becomes visible in one transaction together with its tokens and all layers.
"""

from __future__ import annotations

import contextlib
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

from backend.errors import LayerScopeError
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


class _Connection:
    """One DuckDB database instance (or a cursor on one) and its helpers."""

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
    def cursor(self):
        """A Store on the same database with its own DuckDB cursor (one per thread)."""
        return type(self)(self.path, _con=self.con.cursor())

    def close(self) -> None:
        con, self.con = getattr(self, "con", None), None
        if con is not None:
            con.close()

    def __enter__(self):
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
