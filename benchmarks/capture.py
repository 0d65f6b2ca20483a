"""Capture speed and storage: ours vs our bare forward vs naive Hugging Face, same run.

    python benchmarks/capture.py [--prompts 256] [--repeat 3]

GPT-2-small shape (12 layers, d=768), random weights saved with save_pretrained, random
token-id prompts of 8..256 tokens. Prints medians and ratios; record them in RESULTS.md.
TransformerLens and nnsight are not measured here yet (see RESULTS.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend import extract, models  # noqa: E402
from backend.store import Store  # noqa: E402
from backend.worker import pipelined_ingest  # noqa: E402


def make_model(path: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    from tests.conftest import make_tokenizer

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257)).save_pretrained(path)
    make_tokenizer(bos=False).save_pretrained(path)


def prompts(n: int, seed: int = 0) -> list[extract.Tokenized]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ids = rng.integers(10, 50000, rng.integers(8, 257)).tolist()
        out.append(extract.Tokenized(f"p{i}", ids, [(-1, -1)] * len(ids), [False] * len(ids),
                                     False, len(ids)))
    return out


def timed(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp())
    make_model(tmp / "m")
    items = prompts(args.prompts)
    n_tok = sum(len(t.ids) for t in items)
    lm = models.load_model(str(tmp / "m"), dtype="auto")
    settings = extract.CaptureSettings(dtype=str(lm.dtype).removeprefix("torch."))
    pairs = [(f"r{i}", t) for i, t in enumerate(items)]

    def ours():
        db = tmp / f"ours-{time.monotonic_ns()}.duckdb"
        with Store(db) as s:  # the worker's path: capture + pipelined DuckDB ingest
            pipelined_ingest(s, lm.info.model_id, extract.capture(lm, pairs, settings),
                             lambda b: None)
            s.con.execute("CHECKPOINT")
        ours.db = db

    def bare():
        with torch.inference_mode():
            for b in extract.plan_batches([len(t.ids) for t in items], 8192):
                w = max(len(items[i].ids) for i in b)
                ids = torch.zeros((len(b), w), dtype=torch.long)
                mask = torch.zeros_like(ids)
                for r, i in enumerate(b):
                    ids[r, : len(items[i].ids)] = torch.tensor(items[i].ids)
                    mask[r, : len(items[i].ids)] = 1
                lm.base(input_ids=ids, attention_mask=mask, use_cache=False)

    from transformers import AutoModelForCausalLM

    naive_model = AutoModelForCausalLM.from_pretrained(tmp / "m", dtype=torch.float32).eval()

    def naive():
        with torch.inference_mode():
            for s in range(0, len(items), 16):  # fixed batches in input order, padded
                chunk = items[s:s + 16]
                w = max(len(t.ids) for t in chunk)
                ids = torch.zeros((len(chunk), w), dtype=torch.long)
                mask = torch.zeros_like(ids)
                for r, t in enumerate(chunk):
                    ids[r, : len(t.ids)] = torch.tensor(t.ids)
                    mask[r, : len(t.ids)] = 1
                out = naive_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                _ = [h.numpy() for h in out.hidden_states]

    t_ours, t_bare, t_naive = (timed(f, args.repeat) for f in (ours, bare, naive))
    values = n_tok * 13 * 768
    with Store(ours.db) as s:
        run_ids = [f"r{i}" for i in range(len(items))]
        t_run = timed(lambda: s.run_layers(run_ids[0]), 20)
        t_layer = timed(lambda: s.layer(run_ids, 6), 3)
        act_bytes = s.summary()["activation_bytes"]
    file_bytes = ours.db.stat().st_size
    print(f"machine: {torch.get_num_threads()} threads, dtype {settings.dtype}, "
          f"{len(items)} prompts, {n_tok} tokens")
    print(f"ours end-to-end      {t_ours:7.2f} s  {n_tok / t_ours:8.0f} tok/s")
    print(f"our bare forward     {t_bare:7.2f} s  {n_tok / t_bare:8.0f} tok/s   ours/bare speed = "
          f"{t_bare / t_ours:.2f}x")
    print(f"naive HF fp32        {t_naive:7.2f} s  {n_tok / t_naive:8.0f} tok/s   ours vs naive = "
          f"{t_naive / t_ours:.2f}x")
    print(f"bytes/value: blobs {act_bytes / values:.3f}, whole file {file_bytes / values:.3f}")
    print(f"read all layers of one run: {t_run * 1e3:.1f} ms; one layer of {n_tok} tokens: "
          f"{t_layer:.3f} s ({n_tok / t_layer / 1e3:.0f}k tokens/s)")


if __name__ == "__main__":
    main()
