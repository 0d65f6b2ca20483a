"""Runs: their metadata, the ingest of captured runs (one transaction each batch), deletes.

A part of ``Store`` (backend/store/store.py); every SQL string of the project lives in
backend/store/."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pyarrow as pa

from backend.records import CapturedRun
from backend.store import codec
from backend.store.connection import (
    DUCKDB_VACUUM_TASKS,
    _remove_files,
)

log = logging.getLogger(__name__)


class _Runs:
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
        self.remove_orphan_shards()
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
