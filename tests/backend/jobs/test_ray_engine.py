"""The Ray engine on a real local Ray (2 CPUs): same runs as the local engine, cache hits
both ways, views unchanged on shard-resident runs, failures register nothing.

Skipped with a reason when ray is not installed (requirements-scale.txt; CI installs it)."""

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip(
    "ray", reason="ray[data] is not installed (pip install -r requirements-scale.txt)"
)

from backend.jobs.base import JobSpec  # noqa: E402
from backend.jobs.ray_engine import DIE_ONCE_ENV, FAIL_ON_ENV, run_ray_extract  # noqa: E402
from backend.jobs.worker import Worker  # noqa: E402
from backend.store import Store  # noqa: E402
from backend.views import similarity as V  # noqa: E402

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


def test_a_killed_worker_process_is_replaced_and_no_run_is_lost_or_doubled(
    tmp_path, tiny_model_dir, monkeypatch
):
    marker = tmp_path / "died"
    monkeypatch.setenv(DIE_ONCE_ENV, str(marker))
    store = _store(tmp_path, "kill")
    p = _ray_job(store, str(tiny_model_dir("gpt2")))
    assert marker.exists()  # the first actor call did kill its process
    assert p.status == "done", p.message
    assert p.result["runs"] == len(TEXTS)
    # registration checked every layer holds each run exactly once; the reads agree
    runs = store.set_runs("s", p.result["model_id"])
    x, _ = store.layer(runs["run_id"].tolist(), 1)
    assert len(x) == runs["n_tokens"].sum() == p.result["tokens"]
    store.close()
