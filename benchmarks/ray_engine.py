"""Ray engine vs local engine: same GPT-2-small-shape model (random weights), same prompts.

- local: ``Worker.run`` of an extract job (this process, torch's threads, DuckDB blobs);
- ray N: ``run_ray_extract`` with N CPU actors (one core each) on a local Ray started
  beforehand; Ray's own start-up (``ray.init``) is timed separately; the actors' start-up
  (process, imports, model load) is inside the ray time, as a user would see it.

Also: bytes per stored value of the shards (files alone, and with the DuckDB file's metadata)
and the time to read one layer of every token from shards vs from the DuckDB file.

    python benchmarks/ray_engine.py [--prompts 32] [--min-len 16] [--max-len 128] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd

from benchmarks._common import timed
from benchmarks.capture import N_LAYERS, D, machine, make_model, make_prompts


def _store(work: Path, name: str, texts: list[str]):
    from backend.store import Store

    s = Store(work / f"{name}.duckdb")
    s.save_prompt_set("bench", pd.DataFrame({"text": texts}))
    return s


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--min-len", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--read-tokens", type=int, default=100_000, help="0: skip the scale read")
    ap.add_argument("--only-read", action="store_true", help="only the synthetic scale read")
    args = ap.parse_args(argv)
    import ray

    from backend.jobs.base import JobSpec
    from backend.jobs.ray_engine import run_ray_extract
    from backend.jobs.worker import Worker

    work = Path(tempfile.mkdtemp(prefix="layerscope-ray-bench-"))
    if args.only_read:
        read_at_scale(work, args.read_tokens)
        return {}
    model = work / "gpt2-small-random"
    make_model(model)
    texts = [
        " ".join(f"w{t}" for t in p) for p in make_prompts(args.prompts, args.min_len, args.max_len)
    ]
    spec = JobSpec(model=str(model), set_name="bench", dtype="float32")
    print(f"machine: {machine()}")

    native = _store(work, "local", texts)
    t = time.perf_counter()
    p = Worker(native).run(spec)
    local_s = time.perf_counter() - t
    assert p.status == "done", p.message
    n_tok = p.result["tokens"]
    rows = {"local engine (job, 2 torch threads, DuckDB)": local_s}
    t = time.perf_counter()
    ray.init(num_cpus=max(args.workers) + 1, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    stores = {}
    for w in args.workers:
        s = _store(work, f"ray{w}", texts)
        t = time.perf_counter()
        r = run_ray_extract(s, JobSpec(model=str(model), set_name="bench", dtype="float32"), w)
        rows[f"ray engine, {w} CPU actor(s) x 1 thread (incl. actor start-up)"] = (
            time.perf_counter() - t
        )
        assert r["runs"] == args.prompts and r["tokens"] == n_tok
        stores[w] = s
    ray.shutdown()
    print(
        f"model: GPT-2-small shape ({N_LAYERS} layers, d={D}), random weights, float32; "
        f"{args.prompts} prompts, {n_tok} tokens ({args.min_len}..{args.max_len})\n"
    )
    print(f"{'engine':<66} {'s':>7} {'tok/s':>7} {'vs local':>9}")
    for name, s in rows.items():
        print(f"{name:<66} {s:7.2f} {n_tok / s:7.0f} {local_s / s:8.2f}x")
    print(f"{'Ray start-up (ray.init, local, not included above)':<66} {ray_start:7.2f}")

    s = stores[args.workers[0]]
    summ = s.summary()
    s.checkpoint()
    values = n_tok * (N_LAYERS + 1) * D
    db_bytes = (work / f"ray{args.workers[0]}.duckdb").stat().st_size
    print(
        f"\nshards: {summ['shard_files']} files, {summ['shard_bytes'] / values:.3f} bytes per "
        f"value; with the DuckDB file (runs, tokens, registration) "
        f"{(summ['shard_bytes'] + db_bytes) / values:.3f} (target <= 2.05)"
    )
    ids = s.set_runs("bench", r["model_id"])["run_id"].tolist()
    layer = N_LAYERS // 2
    t_shard, (x, _) = timed(lambda: s.layer(ids, layer), 3)
    t_native, (y, _) = timed(lambda: native.layer(ids, layer), 3)
    assert (x == y).all()  # bit-identical to the local engine's runs
    print(
        f"one layer of {len(x)} tokens: shards {t_shard * 1000:.0f} ms, DuckDB file "
        f"{t_native * 1000:.0f} ms (target: 100k tokens <= 0.5 s); bit-identical: yes"
    )
    if args.read_tokens:
        read_at_scale(work, args.read_tokens)
    return {"rows": rows, "ray_start_s": ray_start, "tokens": n_tok}


def read_at_scale(work: Path, n_tokens: int, d: int = D, per_run: int = 100) -> None:
    """One layer of ``n_tokens`` tokens, read from a shard and from the DuckDB file: a
    synthetic 2-layer model (random fp16 vectors) written the way the Ray engine writes
    (``SHARD_SCHEMA``, layer=K/ files) and, for the file, through ``Store.ingest``."""
    import json

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from backend.jobs.ray_engine import SHARD_SCHEMA
    from backend.models import ModelInfo
    from backend.records import CapturedRun, make_run_id
    from backend.store import codec

    info = ModelInfo("synthetic", "synthetic", "synthetic", "Synthetic", 1, d, 10, False, True,
                     None, None, "float32", None, 0)  # fmt: skip
    rng = np.random.default_rng(0)
    n_runs = n_tokens // per_run
    texts = [f"prompt {i}" for i in range(n_runs)]
    ids = [make_run_id(info.model_id, t, {}) for t in texts]
    runs = [
        CapturedRun(rid, t, list(range(per_run)), ["w"] * per_run, [(0, 1)] * per_run,
                    [False] * per_run, rng.normal(size=(2, per_run, d)).astype(np.float16))
        for rid, t in zip(ids, texts)
    ]  # fmt: skip
    shard, native = _store(work, "read-shard", texts), _store(work, "read-native", texts)
    native.upsert_model(info)
    for k in range(0, n_runs, 200):
        native.ingest(info.model_id, runs[k : k + 200])
    native.checkpoint()
    files = []
    for layer in (0, 1):
        cols = {f.name: [] for f in SHARD_SCHEMA}
        for r in runs:
            c, blob = codec.encode(r.hidden[layer])
            first = layer == 0
            row = dict(run_id=r.run_id, layer=layer, n_tokens=per_run, d_model=d, codec=c,
                       data=blob, truncated=False if first else None,
                       token_ids=r.token_ids if first else None,
                       tokens=r.tokens if first else None,
                       starts=[0] * per_run if first else None,
                       ends=[1] * per_run if first else None,
                       special=r.special if first else None,
                       info=info.to_json() if first else None)  # fmt: skip
            for key, v in row.items():
                cols[key].append(v)
        path = work / "shards" / "synthetic" / "job" / f"layer={layer}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        tbl = pa.table(cols, schema=SHARD_SCHEMA).drop_columns(["layer"])
        pq.write_table(tbl, path, compression="none")
        files.append((str(path), layer, path.stat().st_size))
    plan = pd.DataFrame({"run_id": ids, "text": texts, "settings": json.dumps({})})
    shard.register_shards(info, "job", plan, files)
    shard.checkpoint()
    t_shard, (x, _) = timed(lambda: shard.layer(ids, 1), 3)
    t_native, (y, _) = timed(lambda: native.layer(ids, 1), 3)
    assert (x == y).all()
    values = n_tokens * 2 * d
    print(
        f"\nat scale (synthetic, {n_tokens} tokens, d={d}, 2 layers): one layer read from "
        f"shards {t_shard:.3f} s, from the DuckDB file {t_native:.3f} s (target <= 0.5 s); "
        f"shard files {sum(f[2] for f in files) / values:.3f} bytes per value, "
        f"with the DuckDB file {(sum(f[2] for f in files) + (work / 'read-shard.duckdb').stat().st_size) / values:.3f}"
    )


if __name__ == "__main__":
    main()
