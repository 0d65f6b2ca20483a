"""Shared by the benchmark scripts (run as `python benchmarks/NAME.py`)."""

from __future__ import annotations

import statistics
import time


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median wall seconds of ``repeat`` calls of fn, and the last call's result."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


GPT2_VOCAB = 50257


def make_gpt2_small(path) -> None:
    """A GPT-2-small-config model with random weights (seed 0) and a word-level tokenizer of
    the real vocabulary size, saved like a user's local directory."""
    import torch
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tkm
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=GPT2_VOCAB)
    ).save_pretrained(path)
    tk = Tokenizer(tkm.WordLevel({f"w{i}": i for i in range(GPT2_VOCAB)}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="w0", pad_token="w0", bos_token="w50256", eos_token="w50256"
    ).save_pretrained(path)
