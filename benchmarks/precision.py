"""How far stored hidden states move when the model computes in bf16 / fp16 instead of fp32.

    python benchmarks/precision.py             # 6 prompts of 16..128 random tokens
    python benchmarks/precision.py --quick     # 2 prompts
    python benchmarks/precision.py --model demo  # the bundled trained demo model, demo prompts

Model: GPT-2-small shape (12 layers, d = 768, vocab 50257), random weights (seed 0),
``save_pretrained`` to a temp dir (config dtype float32) and loaded through
``models.load_model`` in each dtype. Each prompt is captured by ``backend.capture.extract``
(the extract job's path) and passed through the store's codec (fp16 blobs), then compared
with the fp32 model's states kept in fp32 (no storage). Per token, relative deviation
||h - h_ref|| / ||h_ref||; the table gives the median and maximum over tokens, at the last
layer and at the worst layer, and the mean cosine at the last layer. The fp32 row is the
storage error alone. dtype 'auto' (what this model now computes in) is fp32.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
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
from backend.capture import extract
from backend.store import codec
from benchmarks._common import GPT2_VOCAB, make_gpt2_small

VOCAB = GPT2_VOCAB


def make_model(path: Path) -> None:
    make_gpt2_small(path)


def states(path: str, dtype: str, texts: list[str], store: bool) -> list[np.ndarray]:
    """(n_layers + 1, n_tokens, d) float32 per prompt, through the codec when ``store``."""
    lm = models.load_model(path, dtype=dtype)
    items = [(str(i), t) for i, t in enumerate(extract.tokenize(lm.tokenizer, texts))]
    out = {}
    for runs in extract.capture(lm, items, extract.CaptureSettings(dtype=dtype)):
        for r in runs:
            h = r.hidden
            if store:
                n, d = h.shape[1:]
                h = np.stack([codec.decode(*codec.encode(layer), n, d) for layer in h])
            else:
                h = h.float().numpy()
            out[r.run_id] = h
    return [out[str(i)] for i in range(len(texts))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=None, help="a model reference instead of GPT-2-small")
    args = ap.parse_args()
    if args.quick:
        args.prompts = 2
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    if args.model is None:
        texts = [
            " ".join(f"w{i}" for i in rng.integers(10, 50000, rng.integers(16, 129)))
            for _ in range(args.prompts)
        ]
        tmp = Path(tempfile.mkdtemp())
        make_model(tmp / "m")
        path = str(tmp / "m")
    else:
        import pandas as pd

        path = args.model
        pool = pd.concat(
            pd.read_csv(f)["text"] for f in sorted((ROOT / "backend/demo/sets").glob("*.csv"))
        )
        texts = pool.sample(args.prompts * 10, random_state=0).tolist()
    print(f"auto resolves to {models.pick_dtype('auto', model=path)} for this checkpoint")
    print(f"bf16 kernels on this CPU: {models.cpu_has_bf16()}")
    ref = states(path, "float32", texts, store=False)
    n_tok = sum(h.shape[1] for h in ref)
    print(f"{len(texts)} prompts, {n_tok} tokens; deviation from the fp32 model's states\n")
    print(
        "| computed in | stored as | last layer: median | max | mean cosine | worst layer: median |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for dtype in ("float32", "bfloat16", "float16"):
        got = states(path, dtype, texts, store=True)
        rel = np.concatenate(
            [np.linalg.norm(g - r, axis=-1) / np.linalg.norm(r, axis=-1) for g, r in zip(got, ref)],
            axis=1,
        )  # (n_layers + 1, n_tokens)
        last = rel[-1]
        cos = np.concatenate(
            [
                (g[-1] * r[-1]).sum(-1)
                / np.linalg.norm(g[-1], axis=-1)
                / np.linalg.norm(r[-1], axis=-1)
                for g, r in zip(got, ref)
            ]
        )
        med = np.median(rel, axis=1)
        worst = int(np.argmax(med))
        print(
            f"| {dtype} | fp16 blobs | {np.median(last):.2%} | {last.max():.2%} | "
            f"{cos.mean():.6f} | {med[worst]:.2%} (layer {worst}) |"
        )


if __name__ == "__main__":
    main()
