"""The Ray engine on a real local Ray (2 CPUs): same runs as the local engine, cache hits
both ways, views unchanged on shard-resident runs, failures register nothing.

Skipped with a reason when ray is not installed (requirements-scale.txt; CI installs it)."""

import contextlib
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip(
    "ray", reason="ray[data] is not installed (pip install -r requirements-scale.txt)"
)

from backend.cli import main  # noqa: E402
from backend.jobs.base import JobSpec  # noqa: E402
from backend.jobs.ray_engine import (  # noqa: E402
    DIE_ONCE_ENV,
    DRIVER_KILL_ENV,
    FAIL_ON_ENV,
    run_ray_extract,
)
from backend.jobs.worker import Worker  # noqa: E402
from backend.store import Store  # noqa: E402
from backend.views import similarity as V  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

pytestmark = pytest.mark.slow
TEXTS = [
    "the cat sits on the mat .",
    "a dog runs",
    "the big red dogs near the cat run .",
    "the cats are happy and the dogs are sad",
    "a small cat",
    "dogs run",
]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _store(tmp_path, name, texts=TEXTS):
    s = Store(tmp_path / f"{name}.duckdb")
    s.save_prompt_set("s", pd.DataFrame({"text": texts}))
    return s


def _local(store, model):
    p = Worker(store).run(JobSpec(model=model, set_name="s"))
    assert p.status == "done", p.message
    return p.result


def _ray_job(store, model, **options):
    p = Worker(store).run(
        JobSpec(model=model, set_name="s", options={"engine": "ray", "workers": 1, **options})
    )
    return p


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_ray_runs_equal_local_runs_and_are_cache_hits_both_ways(tmp_path, tiny_model_dir, family):
    model = str(tiny_model_dir(family))
    native, sharded = _store(tmp_path, "native"), _store(tmp_path, "sharded")
    a = _local(native, model)
    p = _ray_job(sharded, model)
    assert p.status == "done", p.message
    b = p.result
    assert (b["runs"], b["cached_runs"], b["engine"]) == (len(TEXTS), 0, "ray")
    assert (b["model_id"], b["tokens"]) == (a["model_id"], a["tokens"])
    ra, rb = native.set_runs("s", a["model_id"]), sharded.set_runs("s", b["model_id"])
    assert ra["run_id"].tolist() == rb["run_id"].tolist()  # same run ids, same order
    assert sharded.summary()["shard_runs"] == len(TEXTS)
    assert sharded.con.execute("SELECT count(*) FROM activations").fetchone()[0] == 0
    for rid in ra["run_id"]:
        pd.testing.assert_frame_equal(native.tokens(rid), sharded.tokens(rid))
        np.testing.assert_array_equal(native.run_layers(rid), sharded.run_layers(rid))  # bits
    ids = ra["run_id"].tolist()[::-1]
    for layer in (0, 2):
        xa, ia = native.layer(ids, layer)
        xb, ib = sharded.layer(ids, layer)
        np.testing.assert_array_equal(xa, xb)
        pd.testing.assert_frame_equal(ia, ib)
    np.testing.assert_array_equal(native.pooled(ids, "mean"), sharded.pooled(ids, "mean"))
    np.testing.assert_array_equal(native.pooled(ids, "last"), sharded.pooled(ids, "last"))
    pos = [0, -2, 1][: len(ids)] + [-1] * max(0, len(ids) - 3)
    np.testing.assert_array_equal(native.rows(ids, pos, 2), sharded.rows(ids, pos, 2))
    # a view: layer CKA is the same matrix on shard-resident and native runs
    req = V.Request(kind="layer-cka", model_id=a["model_id"], set_name="s")
    ma, mb = V.compute(native, req).matrix, V.compute(sharded, req).matrix
    np.testing.assert_array_equal(ma.values, mb.values)
    # a second Ray extract sends nothing (no Ray work at all); a local one is a full hit too
    again = run_ray_extract(sharded, JobSpec(model=model, set_name="s"))
    assert (again["runs"], again["cached_runs"], again["shards"]) == (0, len(TEXTS), [])
    assert (_local(sharded, model)["runs"], _local(sharded, model)["cached_runs"]) == (0, 6)
    # export reads the shards too; delete removes registration and files
    out = tmp_path / "x.parquet"
    assert sharded.export_parquet("s", b["model_id"], out, layer=1) == a["tokens"]
    files = list((tmp_path / "shards").rglob("*.parquet"))
    assert files and all(f.is_file() for f in files)
    sharded.delete_set("s")
    assert sharded.summary()["shard_files"] == 0 and sharded.summary()["runs"] == 0
    assert not list((tmp_path / "shards").rglob("*.parquet"))
    native.close()
    sharded.close()


def test_a_worker_that_raises_fails_the_job_and_registers_nothing(
    tmp_path, tiny_model_dir, monkeypatch
):
    monkeypatch.setenv(FAIL_ON_ENV, "big red")
    store = _store(tmp_path, "fail")
    p = _ray_job(store, str(tiny_model_dir("gpt2")))
    assert p.status == "failed"
    assert "nothing was registered" in p.message and "big red" in p.message, p.message
    s = store.summary()
    assert (s["runs"], s["shard_files"], s["models"]) == (0, 0, 0)
    assert not list((tmp_path / "shards").rglob("*.parquet"))
    store.close()


def test_cli_extract_on_ray_survives_a_killed_worker_process(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    """`extract --engine ray` (one worker process is killed mid-job: Ray restarts the actor and
    retries the task), then `ls` says where the runs live; no run is lost or doubled."""
    marker = tmp_path / "died"
    monkeypatch.setenv(DIE_ONCE_ENV, str(marker))
    db, f = str(tmp_path / "cli.duckdb"), tmp_path / "p.txt"
    f.write_text("\n".join(TEXTS) + "\n")
    model = str(tiny_model_dir("gpt2"))
    argv = ["extract", "--model", model, "--prompts", str(f), "--set", "s", "--db", db]
    assert main([*argv, "--engine", "ray", "--workers", "1", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert marker.exists()  # the first actor call did kill its process
    assert (r["runs"], r["cached_runs"], r["engine"]) == (len(TEXTS), 0, "ray")
    assert main([*argv, "--json"]) == 0  # the local engine: a full cache hit
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cached_runs"] == 6
    assert main(["ls", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "0 in the file, 6 in" in out and "(6: shards)" in out, out
    with Store(db) as store:  # registration checked each layer holds each run exactly once
        runs = store.set_runs("s", r["model_id"])
        x, _ = store.layer(runs["run_id"].tolist(), 1)
        assert len(x) == runs["n_tokens"].sum() == r["tokens"]


def test_a_driver_killed_before_registering_leaves_nothing_visible(tmp_path, tiny_model_dir):
    """kill -9 of the driver at the worst moment (shard complete and renamed, transaction not
    yet run): no run is visible, and the same command again computes everything once."""
    db, f = tmp_path / "k.duckdb", tmp_path / "p.txt"
    f.write_text("\n".join(TEXTS) + "\n")
    model = str(tiny_model_dir("gpt2"))
    argv = ["extract", "--model", model, "--prompts", str(f), "--set", "s", "--db", str(db)]
    env = {**os.environ, DRIVER_KILL_ENV: "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", *argv, "--engine", "ray"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: its local Ray goes down with it
    )
    try:
        assert proc.wait(timeout=240) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    shard_dirs = [
        p
        for p in (tmp_path / "shards").rglob("*")
        if p.is_dir() and p.parent.parent == tmp_path / "shards"
    ]
    assert shard_dirs, "the driver died before the shard was written"
    with Store(db) as store:
        s = store.summary()
        assert (s["runs"], s["shard_files"], s["shard_runs"]) == (0, 0, 0)
        p = _ray_job(store, model)  # again (on the test's Ray): everything computed once
        assert p.status == "done", p.message
        assert (p.result["runs"], p.result["cached_runs"]) == (len(TEXTS), 0)
        assert store.summary()["shard_runs"] == len(TEXTS)


def test_a_gpu_worker_on_a_cluster_without_gpus_is_refused_not_left_waiting(
    tmp_path, tiny_model_dir
):
    """`--gpus-per-worker 1` on this GPU-less local cluster: one message, at once, nothing
    stored (it used to wait forever for a GPU that never comes)."""
    store = _store(tmp_path, "gpu")
    p = _ray_job(store, str(tiny_model_dir("gpt2")), gpus_per_worker=1.0)
    assert p.status == "failed"
    assert "0 GPUs" in p.message and "--gpus-per-worker 0" in p.message, p.message
    assert store.summary()["runs"] == 0
    store.close()


def test_check_resources_counts_what_the_cluster_can_place():
    from backend.errors import LayerScopeError
    from backend.jobs.ray_engine import check_resources

    check_resources({"CPU": 2.0}, 2, 0.0)
    check_resources({"CPU": 8.0, "GPU": 2.0}, 4, 0.5)
    with pytest.raises(LayerScopeError, match="use --workers 2 or fewer"):
        check_resources({"CPU": 2.0}, 3, 0.0)
    with pytest.raises(LayerScopeError, match="0 GPUs"):
        check_resources({"CPU": 16.0}, 1, 1.0)
    with pytest.raises(LayerScopeError, match="hold 2 workers"):
        check_resources({"CPU": 16.0, "GPU": 2.0}, 3, 1.0)


def test_a_damaged_shard_is_reported_and_extract_recomputes_exactly_its_runs(
    tmp_path, tiny_model_dir
):
    """A registered shard file that goes missing, is cut to zero bytes or has other bytes:
    views get one message (not DuckDB's IOException), `damaged_shards` names the shard, and
    the next extract (either engine) recomputes exactly those runs, to the same bits; a
    driver's unregistered leftovers go with the next delete."""
    from backend.errors import LayerScopeError

    model = str(tiny_model_dir("gpt2"))
    store = _store(tmp_path, "damage")
    p = _ray_job(store, model)
    assert p.status == "done", p.message
    mid = p.result["model_id"]
    ids = store.set_runs("s", mid)["run_id"].tolist()
    want = {rid: store.run_layers(rid) for rid in ids}
    files = sorted((tmp_path / "shards").rglob("*.parquet"))
    flip = lambda f: f.write_bytes(
        bytes(b ^ 0xFF if i == 100 else b for i, b in enumerate(f.read_bytes()))
    )
    cases = [  # (damage, its size changes, the engine that recomputes)
        (lambda f: f.unlink(), True, "ray"),
        (flip, False, "ray"),  # same size, other bytes: only the checksum sees it
        (lambda f: f.write_bytes(b""), True, "local"),
    ]
    for hurt, resized, engine in cases:
        files = sorted((tmp_path / "shards").rglob("*.parquet"))
        target = files[-1]
        hurt(target)
        bad = store.damaged_shards(mid)
        assert len(bad) == 1, bad
        if resized:  # every read of those runs says so
            with pytest.raises(LayerScopeError, match=r"missing or damaged.*extract again"):
                store.layer(ids, int(target.parent.name.split("=")[1]))
        if engine == "ray":
            again = _ray_job(store, model)
        else:
            again = Worker(store).run(JobSpec(model=model, set_name="s"))
        assert again.status == "done", again.message
        assert (again.result["runs"], again.result["cached_runs"]) == (len(ids), 0)
        assert store.damaged_shards(mid) == {}
        for rid in ids:
            np.testing.assert_array_equal(store.run_layers(rid), want[rid])
    # a killed driver's temporary directory, never registered: removed by the next delete
    leftover = tmp_path / "shards" / mid / ".tmp-dead" / "layer=0" / "part.parquet"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"PAR1")
    store.delete_set("s")
    assert not leftover.exists() and not leftover.parent.parent.exists()
    store.close()
