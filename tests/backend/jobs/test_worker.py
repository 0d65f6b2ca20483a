"""Jobs: cache hits do no forward pass, budgets refuse, cancel keeps runs, kill -9 is safe."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from backend.budget import Budget
from backend.capture import extract
from backend.jobs.base import JobSpec
from backend.jobs.extract import estimate
from backend.jobs.worker import Worker
from backend.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TEXTS = [" ".join(["the cat sits on the mat ."] * (1 + i % 3)) for i in range(12)]
TEXTS = [f"{t} {'dog ' * i}".strip() for i, t in enumerate(TEXTS)]


def _set(store, texts=TEXTS):
    store.save_prompt_set("s", pd.DataFrame({"text": texts}))


def test_second_run_is_a_cache_hit_with_zero_forward_passes(store, tiny_model_dir, monkeypatch):
    _set(store)
    spec = JobSpec(model=str(tiny_model_dir("gpt2")), set_name="s", dtype="float32")
    w = Worker(store)
    p1 = w.run(spec)
    assert p1.status == "done" and p1.result["runs"] == len(TEXTS)
    calls = []
    monkeypatch.setattr(extract, "capture", lambda *a, **k: calls.append(1) or iter(()))
    p2 = w.run(spec)
    assert p2.status == "done" and p2.result["runs"] == 0
    assert p2.result["cached_runs"] == len(TEXTS) and calls == []
    # a new prompt computes only what is missing
    monkeypatch.undo()
    _set(store, TEXTS + ["a new prompt"])
    p3 = w.run(spec)
    assert p3.result["runs"] == 1 and p3.result["cached_runs"] == len(TEXTS)


def test_estimate_counts_tokens_and_bytes(store, tiny_model_dir):
    _set(store)
    spec = JobSpec(model=str(tiny_model_dir("gpt2")), set_name="s", dtype="float32")
    est = estimate(store, spec)
    n_tokens = sum(len(t.split()) for t in TEXTS)  # word-level tokenizer, gpt2: no <bos>
    assert est.tokens == n_tokens and est.cached_runs == 0
    assert est.bytes == n_tokens * 4 * 32 * 2  # (3 layers + 1) x d_model 32 x 2 bytes


def test_budget_refuses_with_a_message_and_writes_nothing(store, tiny_model_dir):
    _set(store)
    w = Worker(store, Budget(max_write_bytes=1000))
    p = w.run(JobSpec(model=str(tiny_model_dir("gpt2")), set_name="s"))
    assert p.status == "failed" and "budget" in p.message
    assert store.summary()["runs"] == 0
    w = Worker(store, Budget(max_model_bytes=10))
    p = w.run(JobSpec(model=str(tiny_model_dir("gpt2")), set_name="s"))
    assert p.status == "failed" and "memory" in p.message


def test_bad_inputs_fail_cleanly(store, tiny_model_dir):
    w = Worker(store)
    p = w.run(JobSpec(model=str(tiny_model_dir("gpt2")), set_name="nope"))
    assert p.status == "failed" and "empty or does not exist" in p.message


def test_background_thread_cancel_keeps_completed_runs(store, tiny_model_dir):
    _set(store)
    w = Worker(store)
    spec = JobSpec(
        model=str(tiny_model_dir("gpt2")), set_name="s", batch_tokens=16, dtype="float32"
    )
    job = w.submit(spec)
    w.cancel(job)
    p = w.wait(job, timeout=60)
    assert p.status == "cancelled"
    done = store.summary()["runs"]
    assert done < len(TEXTS)
    w2 = Worker(store)
    p2 = w2.run(spec)
    assert p2.result["runs"] == len(TEXTS) - done
    jobs = store.jobs()
    assert {"cancelled", "done"} <= set(jobs["status"])


@pytest.mark.slow
def test_kill_9_mid_job_leaves_only_whole_runs(tmp_path, tiny_model_dir):
    db = tmp_path / "k.duckdb"
    texts = [f"the cat sits {'on the mat ' * (i % 7)}. {i}" for i in range(3000)]
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(texts))
    cmd = [
        sys.executable,
        "-m",
        "backend",
        "extract",
        "--db",
        str(db),
        "--model",
        str(tiny_model_dir("gpt2")),
        "--prompts",
        str(prompts),
        "--batch-tokens",
        "64",
        "--dtype",
        "float32",
    ]
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    buf = ""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until a few batches have been committed
        ch = proc.stderr.read(1)
        buf += ch
        if not ch or re.search(r"\] [1-9]\d*/", buf):
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Store(db) as s:
        n_done = s.summary()["runs"]
        bad = s.con.execute(
            """SELECT r.run_id FROM runs r LEFT JOIN activations a USING (run_id)
               GROUP BY r.run_id, r.n_tokens HAVING count(a.layer) <> 4
                  OR count(a.layer) > 0 AND min(a.n_tokens) <> r.n_tokens"""
        ).fetchall()
        orphans = s.con.execute(
            "SELECT count(*) FROM activations WHERE run_id NOT IN (SELECT run_id FROM runs)"
        ).fetchall()[0][0]
        assert bad == [] and orphans == 0
        assert 0 < n_done < len(texts), "the kill should land mid-job"
        assert set(s.jobs()["status"]) == {"interrupted"}
    out = subprocess.run(
        cmd + ["--json"], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    r = json.loads(out.stdout)
    assert r["cached_runs"] == n_done and r["runs"] == len(texts) - n_done


def test_locked_db_gives_one_line(tmp_path):
    db = tmp_path / "l.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb,time; c=duckdb.connect({str(db)!r}); "
            "print('ok', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        out = subprocess.run(
            [sys.executable, "-m", "backend", "ls", "--db", str(db)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        assert out.returncode == 2
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and "in use by another process" in lines[0] and "--db" in lines[0]
    finally:
        holder.kill()


def test_the_kind_names_submit_checks_are_the_registry_s():
    from backend.jobs.base import KINDS
    from backend.jobs.kinds import JOB_KINDS

    assert tuple(JOB_KINDS) == KINDS
