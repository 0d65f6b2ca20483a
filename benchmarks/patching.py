"""Activation patching speed: a full layer × position grid on a GPT-2-small-shaped model.

Random weights from ``GPT2Config()`` (12 layers, d = 768), a word-level tokenizer, a clean and
a corrupted prompt of 20 tokens that differ at one position; 13 layers (0..12) × 20 positions
= 260 patched forward passes, batched (``backend.capture.patching``). Target: ≤ 3 s.
Prints the median of ``--repeat`` timings of the grid (model loaded, clean states computed:
the view's cost of a request not yet in the derived cache, minus the model load).
Run: ``python benchmarks/patching.py [--repeat 3] [--positions 20]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks._common import timed


def make_model(path: Path) -> None:
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tkm
    from transformers import AutoModelForCausalLM, GPT2Config, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = GPT2Config()
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tk = Tokenizer(tkm.WordLevel({f"w{i}": i for i in range(cfg.vocab_size)}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="w0", pad_token="w0", bos_token="w50256", eos_token="w50256"
    ).save_pretrained(path)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--positions", type=int, default=20)
    args = ap.parse_args(argv)
    from backend import models
    from backend.capture import patching as P

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt2-small-random"
        make_model(path)
        lm = models.load_model(str(path))
        n = args.positions
        clean = [100 + i for i in range(n)]
        corrupted = list(clean)
        corrupted[n // 3] = 7
        cells = [(layer, p) for layer in range(lm.info.n_layers + 1) for p in range(n)]

        def grid():  # as the view runs it: no-op cells (clean == corrupted) need no pass
            states, _, _ = P.run_plain(lm, clean)
            corr, outs, last = P.run_plain(lm, corrupted)
            return P.patch_cells(lm, corrupted, states, cells, 11, 12, corrupted_outputs=outs,
                                 corrupted_values=corr, corrupted_logits=last)  # fmt: skip

        def grid_all_cells():  # every cell patched, no-ops included (the previous measure)
            states, _, _ = P.run_plain(lm, clean)
            _, outs, _ = P.run_plain(lm, corrupted)
            return P.patch_cells(lm, corrupted, states, cells, 11, 12, corrupted_outputs=outs)

        def grid_no_skip():
            states, _, _ = P.run_plain(lm, clean)
            return P.patch_cells(lm, corrupted, states, cells, 11, 12)

        grid()  # warm-up
        median, _ = timed(grid, args.repeat)
        median_all, _ = timed(grid_all_cells, args.repeat)
        median_no_skip, _ = timed(grid_no_skip, 1)
        out = {
            "cells": len(cells),
            "tokens": n,
            "batch_rows": P.batch_size(lm, n),
            "torch_threads": torch.get_num_threads(),
            "median_s": round(median, 3),
            "every_cell_s": round(median_all, 3),
            "plain_batches_s": round(median_no_skip, 3),
            "target_s": 3.0,
        }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
