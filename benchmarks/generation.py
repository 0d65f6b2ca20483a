"""Generation with capture vs plain sampling, same model, same settings, same run.

    python benchmarks/generation.py                # 6 prompts x 8 samples x 32 new tokens, 3 repeats
    python benchmarks/generation.py --quick        # smoke run

Model: GPT-2-small shape (12 layers, d=768, vocab 50257), random weights, save_pretrained to a
temp dir and loaded through ``models.load_model`` (dtype auto: bf16 on AMX CPUs). Prompts:
random token ids of 16..64 tokens. Every method samples N continuations of one prompt as one
batch (temperature 1, top-p 1, exactly ``--new`` tokens: random weights almost never emit
<eos>, and the check below makes sure).

- plain: ``model.generate(do_sample=True, use_cache=True)``, nothing captured (the limit);
- HF hidden states: the same with ``output_hidden_states=True, return_dict_in_generate=True``
  (transformers' own way to get every layer while generating), copied to CPU tensors;
- ours: ``backend.capture.generate.generate`` (KV cache, residual hooks writing into a preallocated
  buffer, one generator per sample), i.e. what the 'generate' job computes before storing;
- ours + store: the same plus ``Store.ingest`` of the runs into a DuckDB file.
Methods run interleaved; medians; ratios against plain (target from issue 8: ours <= 1.5x).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

from backend import models
from backend.capture.generate import Sampling, generate
from backend.store import Store
from benchmarks._common import GPT2_VOCAB, make_gpt2_small

VOCAB = GPT2_VOCAB


def make_model(path: Path) -> None:
    make_gpt2_small(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.prompts, args.new, args.repeat = 2, 8, 1
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    texts = [
        " ".join(f"w{i}" for i in rng.integers(10, 50000, rng.integers(16, 65)))
        for _ in range(args.prompts)
    ]
    tmp = Path(tempfile.mkdtemp())
    make_model(tmp / "m")
    lm = models.load_model(str(tmp / "m"), dtype="auto")
    tok = lm.tokenizer
    s = Sampling(samples=args.samples, max_new_tokens=args.new, seed=0)

    def plain(text, hidden=False):
        ids = torch.tensor([tok(text)["input_ids"]] * args.samples)
        with torch.inference_mode():
            out = lm.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_p=1.0,
                temperature=1.0,
                top_k=0,
                max_new_tokens=args.new,
                min_new_tokens=args.new,
                use_cache=True,
                pad_token_id=tok.pad_token_id,
                output_hidden_states=hidden,
                return_dict_in_generate=hidden,
            )
        if hidden:  # tuple over steps of tuples over layers: copy out like a capture would
            return [
                torch.cat([h[layer] for h in out.hidden_states], 1).float().clone()
                for layer in range(len(out.hidden_states[0]))
            ]
        return out

    n_new_seen = []

    def ours(text):
        runs = generate(lm, text, s)
        n_new_seen.extend(r.n_tokens - r.n_prompt_tokens for r in runs)
        return runs

    counter = iter(range(10**6))

    def ours_store(text):
        runs = generate(lm, text, s)
        with Store(tmp / f"g{next(counter)}.duckdb") as st:  # a fresh file: same work each time
            st.upsert_model(lm.info)
            st.ingest(lm.info.model_id, runs)

    methods = {
        "plain": lambda t: plain(t),
        "hf_hidden": lambda t: plain(t, True),
        "ours": ours,
        "ours_store": ours_store,
    }
    labels = {
        "plain": "plain model.generate (nothing captured)",
        "hf_hidden": "HF generate, output_hidden_states=True",
        "ours": "ours: generate() with every layer captured",
        "ours_store": "ours + Store.ingest (DuckDB)",
    }
    for f in methods.values():  # warm-up
        f(texts[0])
    times = {k: [] for k in methods}
    for _ in range(args.repeat):
        for k, f in methods.items():
            t0 = time.perf_counter()
            for t in texts:
                f(t)
            times[k].append(time.perf_counter() - t0)
    assert min(n_new_seen) == args.new, "a sample stopped early: the comparison is unfair"
    tokens = args.prompts * args.samples * args.new
    base = statistics.median(times["plain"])
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, dtype {lm.dtype}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"# GPT-2-small shape, {args.prompts} prompts x {args.samples} samples x {args.new} "
        f"new tokens = {tokens:,} generated tokens; {args.repeat} repeats, medians"
    )
    print("| method | median | generated tok/s | vs plain |")
    print("| --- | --- | --- | --- |")
    for k in methods:
        m = statistics.median(times[k])
        print(f"| {labels[k]} | {m:.2f} s | {tokens / m:,.0f} | {m / base:.2f}x |")
    print("target: ours <= 1.5x plain")


if __name__ == "__main__":
    main()
