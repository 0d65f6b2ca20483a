"""Activation reads: whole runs, one layer of many runs, rows, pooled units; Parquet export.

A part of ``Store`` (backend/store/store.py); every SQL string of the project lives in
backend/store/."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from backend.errors import LayerScopeError
from backend.store import codec
from backend.store.connection import (
    _SLICES_PER_RUN,
)

log = logging.getLogger(__name__)


class _Vectors:
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
