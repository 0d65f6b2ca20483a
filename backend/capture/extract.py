"""Capture the residual stream of every layer, batched, without SQL.

``capture`` is a pure step from (loaded model, prompts) to batches of ``CapturedRun``; the
store ingests each batch in one transaction. Layer 0 is the input of block 0 (embedding
output); layer L is the output of block L. Hugging Face's last ``hidden_states`` entry has the
final norm applied for GPT-2 / Llama and is never used.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from backend.models import LoadedModel
from backend.records import (
    CAPTURE_VERSION,
    FP16_MAX,
    CapturedRun,
    CaptureSettings,
    Tokenized,
    make_run_id,
    prompt_id,
    tokenize,
)

log = logging.getLogger(__name__)
__all__ = [  # the run records and ids live in records.py (torch-free); re-exported here
    "CAPTURE_VERSION",
    "CaptureSettings",
    "CapturedRun",
    "ResidualRecorder",
    "Tokenized",
    "capture",
    "decode_tokens",
    "make_run_id",
    "plan_batches",
    "prompt_id",
    "to_storage",
    "tokenize",
]


def to_storage(hidden: torch.Tensor, exact: bool = False) -> np.ndarray:
    """(n_layers + 1, n_tokens, d_model) tensor -> numpy in storage precision, one conversion.

    float16 when every value is below fp16's limit (the codec then stores the bytes as they
    are), else float32 (the codec stores each layer that fits as fp16 and the others as bf16,
    both rounded to nearest even, exactly as torch's ``.to(torch.float16 / bfloat16)``).
    NaN/inf also take the float32 path, where the codec refuses them naming the layer.
    ``exact=True`` always returns float32 (tests that compare with a fresh forward pass).
    """
    hidden = hidden.detach()
    if not exact and hidden.abs().max().item() < FP16_MAX:
        return hidden.to(torch.float16).cpu().numpy()
    return hidden.to(torch.float32).cpu().numpy()


class ResidualRecorder:
    """Forward hooks that record the residual stream entering block 0 and leaving each block.

    ``states`` holds n_layers + 1 tensors (batch, seq, d_model) after a forward pass. Reused by
    generation capture (each step appends the new positions' states).
    """

    def __init__(self, lm: LoadedModel):
        self.lm = lm
        self.states: list[torch.Tensor | None] = []
        self._handles = []

    def __enter__(self) -> ResidualRecorder:
        blocks = self.lm.blocks
        self.states = [None] * (len(blocks) + 1)

        def pre(_mod, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            self.states[0] = h.detach()

        self._handles.append(blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
        for i, block in enumerate(blocks):

            def post(_mod, _args, out, i=i):
                h = out[0] if isinstance(out, tuple) else out
                self.states[i + 1] = h.detach()

            self._handles.append(block.register_forward_hook(post))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def plan_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int = 64) -> list[list[int]]:
    """Sort by length (longest first) and group so that padded tokens stay <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and ((len(cur) + 1) * width > batch_tokens or len(cur) >= max_batch):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


#: one batch's captured float32 states (every layer) stay within this: the forward's own
#: working set grows the same way, and at 8,192 tokens GPT-2 small's extract job peaked at
#: +2.0 GB over the model (benchmarks/RESULTS.md, peak memory); 160 MB is ~4,000 of its tokens
STATES_BUDGET = 160_000_000


def budget_tokens(lm: LoadedModel, batch_tokens: int, budget: int | None = None) -> int:
    """Tokens per forward batch: ``batch_tokens`` at most, and on the CPU at most what keeps
    one batch's states (n_layers + 1 float32 vectors of d_model per token) within ``budget``.
    On an accelerator the forward's activations live in device memory and big batches are what
    keeps it busy, so ``batch_tokens`` alone decides there."""
    if str(getattr(lm, "device", "cpu")) != "cpu":
        return int(batch_tokens)
    per_token = (lm.info.n_layers + 1) * lm.info.d_model * 4
    budget = STATES_BUDGET if budget is None else budget
    return int(max(16, min(batch_tokens, budget // per_token)))


def capture(
    lm: LoadedModel,
    items: Sequence[tuple[str, Tokenized]],
    settings: CaptureSettings,
    batch_tokens: int = 8192,
    should_stop: Callable[[], bool] | None = None,
    exact: bool = False,
) -> Iterator[list[CapturedRun]]:
    """Yield lists of CapturedRun, one list per forward batch. ``items`` = (run_id, Tokenized).

    ``hidden`` is numpy in storage precision (see ``to_storage``; float32 with ``exact``).
    Batches hold at most ``budget_tokens(lm, batch_tokens)`` tokens, padding included."""
    tok = lm.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    lengths = [len(t.ids) for _, t in items]
    with torch.inference_mode(), ResidualRecorder(lm) as rec:
        for batch in plan_batches(lengths, budget_tokens(lm, batch_tokens)):
            if should_stop is not None and should_stop():
                return
            width = max(lengths[i] for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                n = lengths[i]
                ids[row, :n] = torch.tensor(items[i][1].ids)
                mask[row, :n] = 1
            lm.base(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device), use_cache=False)
            runs = []
            for row, i in enumerate(batch):
                run_id, t = items[i]
                n = lengths[i]
                # padding never stored; one conversion to storage precision per run
                hidden = to_storage(torch.stack([s[row, :n] for s in rec.states]), exact)
                runs.append(
                    CapturedRun(
                        run_id=run_id,
                        text=t.text,
                        token_ids=t.ids,
                        tokens=decode_tokens(tok, t.ids),
                        offsets=t.offsets,
                        special=t.special,
                        hidden=hidden,
                        truncated=t.truncated,
                        settings=settings.key(),
                    )
                )
            # the batch's float32 states (13 x 8,192 x 768 x 4 B = 327 MB for GPT-2 small) go
            # now, not when the next forward overwrites them layer by layer; and the batch is
            # not kept here while the next one is computed (the writer owns it)
            rec.states = [None] * len(rec.states)
            hidden = None
            yield runs
            del runs


def decode_tokens(tokenizer, ids: Sequence[int]) -> list[str]:
    return tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False)
