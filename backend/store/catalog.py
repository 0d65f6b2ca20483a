"""Models and prompt sets: what the cache knows about, by fingerprint and by name.

A part of ``Store`` (backend/store/store.py); every SQL string of the project lives in
backend/store/."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from backend.errors import LayerScopeError
from backend.prompts import dedupe, validate_set_name
from backend.records import prompt_id
from backend.store.connection import (
    _missing,
    _remove_files,
)

log = logging.getLogger(__name__)


class _Catalog:
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
        self.remove_orphan_shards()
        self._checkpoint(vacuum=True)
