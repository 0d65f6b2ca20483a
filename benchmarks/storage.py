"""Whole cache file bytes per stored value for short prompts, by DuckDB block size.

    python benchmarks/storage.py [--prompts 96 288 576] [--block-sizes 262144 65536 16384]

A 6-layer GPT-2-shaped model (d = 768, random weights, the word-level tokenizer of
``capture.py``) and prompts of 9..15 random tokens; each count runs one extract job into a
fresh file (``Worker.run``: one transaction per batch, one CHECKPOINT at the end), then
reports file bytes / (tokens x 7 layers x 768), the blob bytes alone, and the file's blocks.
Target (issue 16): <= 2.1 bytes per value from a few hundred prompts up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

import capture as C
import pandas as pd

from backend.jobs.base import JobSpec
from backend.jobs.worker import Worker
from backend.store import Store
from backend.store import connection as store_mod

N_LAYERS = 6


def one(model_dir: Path, work: Path, n_prompts: int, block_size: int) -> dict:
    store_mod.BLOCK_SIZE = block_size  # read when a new file is created
    texts = [" ".join(f"w{i}" for i in p) for p in C.make_prompts(n_prompts, 9, 15, seed=1)]
    db = work / f"s{n_prompts}-{block_size}.duckdb"
    with Store(db) as s:
        s.save_prompt_set("bench", pd.DataFrame({"text": texts}))
        p = Worker(s).run(JobSpec(model=str(model_dir), set_name="bench"))
        if p.status != "done":
            raise RuntimeError(f"the job did not finish: {p.status} {p.message}")
        tokens = s.con.sql("SELECT sum(n_tokens) FROM runs").fetchall()[0][0]
        blob = s.con.sql("SELECT sum(octet_length(data)) FROM activations").fetchall()[0][0]
        blocks = s.con.sql("SELECT total_blocks FROM pragma_database_size()").fetchall()[0][0]
    values = tokens * (N_LAYERS + 1) * C.D
    out = {"file": db.stat().st_size / values, "blob": blob / values, "blocks": blocks}
    db.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, nargs="+", default=[96, 288, 576])
    ap.add_argument("--block-sizes", type=int, nargs="+", default=[262144, 65536, 16384])
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="layerscope-storage-"))
    C.N_LAYERS = N_LAYERS
    C.make_model(work / "m6")
    print(f"load average {os.getloadavg()[0]:.1f}; default block size {store_mod.BLOCK_SIZE}")
    print("| prompts | block size | file bytes/value | blobs bytes/value | blocks |")
    print("| --- | --- | --- | --- | --- |")
    for n in a.prompts:
        for bs in a.block_sizes:
            r = one(work / "m6", work, n, bs)
            print(f"| {n} | {bs // 1024} KB | {r['file']:.3f} | {r['blob']:.3f} | {r['blocks']} |")


if __name__ == "__main__":
    main()
