"""Activation patching: copy the clean run's residual stream at (layer, position) into the
corrupted run's forward pass, many cells per forward pass.

Layer 0 replaces the input of block 0 (a forward pre-hook), layer L the output of block L (a
forward hook), as ``ResidualRecorder`` records them. One batch = B identical copies of the
corrupted input, row r patched at its own (layer, position). Blocks below the lowest patched
layer of a batch are not run: their output is the corrupted run's, already known, so each
such block returns it (expanded to the batch) instead of computing it again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from backend.capture.extract import ResidualRecorder
from backend.models import LoadedModel

BATCH_BYTES = 256 * 2**20  #: activation budget per patched forward pass
MAX_BATCH = 512


@dataclass(frozen=True)
class Readout:
    """Next-token readout at the last position of each row: metric = logit(answer) -
    logit(against); the top-k tokens with their probabilities."""

    metric: np.ndarray  #: (n,)
    top_ids: np.ndarray  #: (n, k)
    top_probs: np.ndarray  #: (n, k)


def readout(logits: torch.Tensor, answer: int, against: int, k: int) -> Readout:
    """``logits`` (n, vocab) of the last position."""
    logits = logits.float()
    probs = logits.softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return Readout(
        metric=(logits[:, answer] - logits[:, against]).cpu().numpy().astype(np.float64),
        top_ids=top.indices.cpu().numpy(),
        top_probs=top.values.cpu().numpy(),
    )


def _last_logits(lm: LoadedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of the last position only (no vocabulary projection of the others)."""
    try:
        out = lm.model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
    except TypeError:  # a model class without logits_to_keep
        out = lm.model(input_ids=input_ids, use_cache=False)
    return out.logits[:, -1]


def run_plain(lm: LoadedModel, ids: Sequence[int]) -> tuple[torch.Tensor, list, torch.Tensor]:
    """One forward pass: (residual states (n_layers + 1, T, d), each block's raw output,
    last-position logits (vocab,))."""
    outs: list = [None] * len(lm.blocks)
    handles = [
        b.register_forward_hook(lambda _m, _a, out, i=i: outs.__setitem__(i, out))
        for i, b in enumerate(lm.blocks)
    ]
    try:
        with torch.inference_mode(), ResidualRecorder(lm) as rec:
            logits = _last_logits(lm, torch.tensor([list(ids)], device=lm.device))
    finally:
        for h in handles:
            h.remove()
    states = torch.stack([s[0] for s in rec.states])
    return states, outs, logits[0]


def clean_logits(lm: LoadedModel, last_state: torch.Tensor) -> torch.Tensor:
    """The model's head on a last-layer residual state (final norm, then unembedding)."""
    h = last_state.to(lm.dtype)
    if lm.final_norm is not None:
        h = lm.final_norm(h)
    return lm.unembed(h)


def batch_size(lm: LoadedModel, n_tokens: int, budget: int = BATCH_BYTES) -> int:
    """Rows per forward pass so that the activations of one block stay within ``budget``."""
    cfg = lm.model.config
    d = lm.info.d_model
    inter = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", 1)
    elem = torch.finfo(lm.dtype).bits // 8
    row = elem * n_tokens * (8 * d + 2 * inter + 2 * heads * n_tokens)
    return int(max(1, min(MAX_BATCH, budget // max(row, 1))))


def _hidden(x):
    return x[0] if isinstance(x, tuple) else x


def _with_hidden(out, h):
    return (h, *out[1:]) if isinstance(out, tuple) else h


def _constant(value):
    def forward(*_args, **_kwargs):
        return value

    return forward


def _patch_hooks(blocks, patches: dict) -> list:
    """Hooks writing ``patches[layer] = (rows, positions, values)`` into the residual stream:
    a pre-hook on block 0 for layer 0, a forward hook on block L - 1 for layer L >= 1."""

    def patched(h, layer):
        rs, ps, vals = patches[layer]
        h = h.clone()
        h[rs, ps] = vals
        return h

    def pre(_mod, args, kwargs):
        if args:
            return (patched(args[0], 0), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": patched(kwargs["hidden_states"], 0)}

    def post_for(layer):
        def post(_mod, _args, out):
            return _with_hidden(out, patched(_hidden(out), layer))

        return post

    handles = []
    for layer in patches:
        if layer == 0:
            handles.append(blocks[0].register_forward_pre_hook(pre, with_kwargs=True))
        else:
            handles.append(blocks[layer - 1].register_forward_hook(post_for(layer)))
    return handles


def patch_cells(
    lm: LoadedModel,
    corrupted_ids: Sequence[int],
    clean_states: torch.Tensor,
    cells: Sequence[tuple[int, int]],
    answer: int,
    against: int,
    k: int = 5,
    corrupted_outputs: list | None = None,
    budget: int = BATCH_BYTES,
) -> Readout:
    """Readout of the corrupted prompt with the residual stream at each (layer, position) of
    ``cells`` replaced by ``clean_states[layer, position]``, one cell per row.

    ``corrupted_outputs`` (each block's output on the corrupted prompt, from ``run_plain``)
    lets a batch skip the blocks below its lowest patched layer."""
    blocks = lm.blocks
    T = len(corrupted_ids)
    clean_states = clean_states.to(device=lm.device, dtype=lm.dtype)
    order = sorted(range(len(cells)), key=lambda i: cells[i])  # by layer: skip more blocks
    B = batch_size(lm, T, budget)
    can_skip = corrupted_outputs is not None and all(
        not isinstance(o, tuple) or all(x is None for x in o[1:]) for o in corrupted_outputs
    )
    metric = np.zeros(len(cells))
    top_ids = np.zeros((len(cells), k), dtype=np.int64)
    top_probs = np.zeros((len(cells), k), dtype=np.float32)
    for start in range(0, len(order), B):
        rows = order[start : start + B]
        n = len(rows)
        by_layer: dict[int, tuple[list[int], list[int]]] = {}
        for r, i in enumerate(rows):
            layer, pos = cells[i]
            by_layer.setdefault(layer, ([], []))
            by_layer[layer][0].append(r)
            by_layer[layer][1].append(pos)
        patches = {
            layer: (
                torch.tensor(rs, device=lm.device),
                torch.tensor(ps, device=lm.device),
                clean_states[layer, ps],
            )
            for layer, (rs, ps) in by_layer.items()
        }

        handles = []
        skipped = []
        try:
            handles = _patch_hooks(blocks, patches)
            low = min(patches)
            if can_skip and low >= 1:
                for b in range(low):  # blocks 0..low-1 give the corrupted run's output
                    out = corrupted_outputs[b]
                    blocks[b].forward = _constant(
                        _with_hidden(out, _hidden(out).expand(n, -1, -1).contiguous())
                    )
                    skipped.append(blocks[b])
            ids = torch.tensor([list(corrupted_ids)] * n, device=lm.device)
            with torch.inference_mode():
                ro = readout(_last_logits(lm, ids), answer, against, k)
        finally:
            for h in handles:
                h.remove()
            for blk in skipped:
                del blk.forward
        metric[rows] = ro.metric
        top_ids[rows] = ro.top_ids
        top_probs[rows] = ro.top_probs
    return Readout(metric, top_ids, top_probs)
