"""Job rows (the worker owns the logic; the store keeps what survives a restart).

A part of ``Store`` (backend/store/store.py); every SQL string of the project lives in
backend/store/."""

from __future__ import annotations

import json
import logging
import os

import pandas as pd

log = logging.getLogger(__name__)


class _Jobs:
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
