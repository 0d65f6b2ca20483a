"""Activation patching: copy the clean run's residual stream at (layer, position) into the
corrupted run's forward pass, many cells per forward pass.

Layer 0 replaces the input of block 0 (a forward pre-hook), layer L the output of block L (a
forward hook), as ``ResidualRecorder`` records them. One batch = B identical copies of the
corrupted input, row r patched at its own position, every row at the same layer (B chosen by
a byte budget). Blocks below that layer are not run: their output is the corrupted run's,
already known, so each such block returns it (expanded to the batch) instead of computing
it again — about half the work of a full grid.

``component`` "attn" / "mlp" patches instead the output of block L's attention or MLP
module (L = 1..n_layers) at one position: the block's residual add and everything after it
then run on the patched value. Module names per family: ``attn`` (GPT-2), ``self_attn``
(Llama, Qwen2, Mistral), ``attention`` (GPT-NeoX); ``mlp`` everywhere.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from backend.capture.extract import ResidualRecorder
from backend.capture.hooks import hidden_of, with_hidden
from backend.errors import LayerScopeError
from backend.models import LoadedModel

COMPONENTS = ("resid", "attn", "mlp")
_MODULES = {"attn": ("attn", "self_attn", "attention"), "mlp": ("mlp",)}

BATCH_BYTES = 256 * 2**20  #: activation budget per patched forward pass
MAX_BATCH = 512


@dataclass(frozen=True)
class Readout:
    """Next-token readout at the last position of each row: metric = logit(answer) -
    logit(against); the top-k tokens with their probabilities."""

    metric: np.ndarray  #: (n,)
    top_ids: np.ndarray  #: (n, k)
    top_probs: np.ndarray  #: (n, k)
    prob: np.ndarray | None = None  #: (n,) probability of the answer token


def readout(logits: torch.Tensor, answer: int, against: int, k: int) -> Readout:
    """``logits`` (n, vocab) of the last position."""
    logits = logits.float()
    probs = logits.softmax(-1)
    top = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return Readout(
        metric=(logits[:, answer] - logits[:, against]).cpu().numpy().astype(np.float64),
        top_ids=top.indices.cpu().numpy(),
        top_probs=top.values.cpu().numpy(),
        prob=probs[:, answer].cpu().numpy().astype(np.float64),
    )


def component_module(block, component: str) -> torch.nn.Module:
    """The attention ("attn") or MLP ("mlp") module of one transformer block."""
    for name in _MODULES[component]:
        m = getattr(block, name, None)
        if isinstance(m, torch.nn.Module):
            return m
    raise LayerScopeError(
        f"Could not find the {component} module of a {type(block).__name__} block "
        f"(looked for {', '.join(_MODULES[component])})."
    )


def component_outputs(lm: LoadedModel, ids: Sequence[int], component: str) -> torch.Tensor:
    """(n_layers + 1, T, d): row L = the output of block L's ``component`` module (row 0 is
    zeros, so that rows are indexed by layer like the residual states)."""
    outs: list = [None] * len(lm.blocks)
    handles = [
        component_module(b, component).register_forward_hook(
            lambda _m, _a, out, i=i: outs.__setitem__(i, hidden_of(out)[0])
        )
        for i, b in enumerate(lm.blocks)
    ]
    try:
        with torch.inference_mode():
            _last_logits(lm, torch.tensor([list(ids)], device=lm.device))
    finally:
        for h in handles:
            h.remove()
    return torch.cat([torch.zeros_like(outs[0])[None], torch.stack(outs)])


def _last_logits(lm: LoadedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Logits of the last position only (no vocabulary projection of the others)."""
    kw = {"input_ids": input_ids, "use_cache": False}
    if "logits_to_keep" in inspect.signature(lm.model.forward).parameters:
        kw["logits_to_keep"] = 1
    return lm.model(**kw).logits[:, -1]


def run_plain(
    lm: LoadedModel, ids: Sequence[int]
) -> tuple[torch.Tensor, list, torch.Tensor, object]:
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


def _constant(value):
    def forward(*_args, **_kwargs):
        return value

    return forward


def _patch_hooks(blocks, layer: int, patch, component: str = "resid") -> list:
    """A hook writing ``patch = (rows, positions, values)`` into the residual stream at
    ``layer``: a pre-hook on block 0 for layer 0, a forward hook on block L - 1 for L >= 1;
    or into the output of block L's attention / MLP module (``component``)."""

    def patched(h):
        rs, ps, vals = patch
        h = h.clone()
        h[rs, ps] = vals
        return h

    def pre(_mod, args, kwargs):
        if args:
            return (patched(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": patched(kwargs["hidden_states"])}

    def post(_mod, _args, out):
        return with_hidden(out, patched(hidden_of(out)))

    if component != "resid":
        if layer < 1:
            raise LayerScopeError("Attention and MLP outputs exist for layers 1..n_layers only.")
        return [component_module(blocks[layer - 1], component).register_forward_hook(post)]
    if layer == 0:
        return [blocks[0].register_forward_pre_hook(pre, with_kwargs=True)]
    return [blocks[layer - 1].register_forward_hook(post)]


def cell_logits(
    lm: LoadedModel,
    corrupted_ids: Sequence[int],
    values: torch.Tensor,
    layer: int,
    position: int,
    component: str = "resid",
) -> torch.Tensor:
    """Last-position logits (vocab,) of the corrupted prompt with one cell patched by
    ``values[layer, position]`` (residual states or ``component_outputs``)."""
    v = values[layer, [position]].to(device=lm.device, dtype=lm.dtype)
    patch = (torch.zeros(1, dtype=torch.long, device=lm.device),
             torch.tensor([position], device=lm.device), v)  # fmt: skip
    handles = _patch_hooks(lm.blocks, layer, patch, component)
    try:
        with torch.inference_mode():
            return _last_logits(lm, torch.tensor([list(corrupted_ids)], device=lm.device))[0]
    finally:
        for h in handles:
            h.remove()


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
    component: str = "resid",
    corrupted_values: torch.Tensor | None = None,
    corrupted_logits: torch.Tensor | None = None,
) -> Readout:
    """Readout of the corrupted prompt with the residual stream at each (layer, position) of
    ``cells`` replaced by ``clean_states[layer, position]``, one cell per row.

    ``corrupted_outputs`` (each block's output on the corrupted prompt, from ``run_plain``)
    lets a batch skip the blocks below its layer. (Running only the positions from the first
    patched one on, with the corrupted run's keys and values as the prefix, was measured
    slower here: transformers' cached forward costs more than the positions it saves.)
    ``corrupted_values`` (the corrupted run's own values, same layout as ``clean_states``)
    with its last-position ``corrupted_logits``: a cell whose clean value equals the corrupted
    one exactly (every position before the first differing token, in a causal model; equal
    embeddings) patches nothing, so its readout is the corrupted run's, with no forward pass.
    ``component`` "attn" / "mlp": ``clean_states`` holds ``component_outputs`` instead, and
    the patch goes into that module of block ``layer`` (blocks below it are skipped)."""
    blocks = lm.blocks
    T = len(corrupted_ids)
    clean_states = clean_states.to(device=lm.device, dtype=lm.dtype)
    same: list[int] = []
    if corrupted_values is not None and corrupted_logits is not None:
        cv = corrupted_values.to(device=lm.device, dtype=lm.dtype)
        same = [i for i, (la, p) in enumerate(cells) if torch.equal(clean_states[la, p], cv[la, p])]
    todo = set(range(len(cells))) - set(same)
    order = sorted(todo, key=lambda i: cells[i])
    B = batch_size(lm, T, budget)
    can_skip = corrupted_outputs is not None and all(
        not isinstance(o, tuple) or all(x is None for x in o[1:]) for o in corrupted_outputs
    )
    batches: list[list[int]] = []
    for i in order:  # one layer per batch: every block below it is skipped
        if not batches or len(batches[-1]) >= B or cells[batches[-1][0]][0] != cells[i][0]:
            batches.append([])
        batches[-1].append(i)
    metric = np.zeros(len(cells))
    top_ids = np.zeros((len(cells), k), dtype=np.int64)
    top_probs = np.zeros((len(cells), k), dtype=np.float32)
    prob = np.zeros(len(cells))
    if same:  # no-op patches: the corrupted run's readout
        ro = readout(corrupted_logits[None].to(lm.device), answer, against, k)
        metric[same], top_ids[same], top_probs[same], prob[same] = (
            ro.metric[0], ro.top_ids[0], ro.top_probs[0], ro.prob[0])  # fmt: skip
    for rows in batches:
        n = len(rows)
        layer = cells[rows[0]][0]
        ps = [cells[i][1] for i in rows]
        patch = (
            torch.arange(n, device=lm.device),
            torch.tensor(ps, device=lm.device),
            clean_states[layer, ps],
        )
        handles, skipped = [], []
        try:
            handles = _patch_hooks(blocks, layer, patch, component)
            if can_skip:  # blocks below the patched one give the corrupted output
                for b in range(layer if component == "resid" else layer - 1):
                    out = corrupted_outputs[b]
                    h = hidden_of(out).expand(n, -1, -1).contiguous()
                    blocks[b].forward = _constant(with_hidden(out, h))
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
        prob[rows] = ro.prob
    return Readout(metric, top_ids, top_probs, prob)


def atp_forward(lm: LoadedModel, ids: Sequence[int], component: str = "resid"):
    """The corrupted run of attribution patching, kept differentiable: (last-position logits
    (vocab,) float32 with their graph, activations [layer] (1, T, d): the residual stream
    (layer 0 = block 0's input) or block L's ``component`` output). Its logits are the
    corrupted run's own, so the caller needs no other corrupted pass."""
    acts: list = [None] * (len(lm.blocks) + 1)

    def leaf(_mod, args, kwargs):  # the embeddings as a leaf: the whole run is differentiable
        h = (args[0] if args else kwargs["hidden_states"]).detach().requires_grad_(True)
        acts[0] = h
        return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

    def keep(i):
        return lambda _m, _a, out: acts.__setitem__(i, hidden_of(out))

    handles = [lm.blocks[0].register_forward_pre_hook(leaf, with_kwargs=True)]
    for i, b in enumerate(lm.blocks):
        mod = b if component == "resid" else component_module(b, component)
        handles.append(mod.register_forward_hook(keep(i + 1)))
    try:
        with torch.inference_mode(False), torch.enable_grad():
            logits = _last_logits(lm, torch.tensor([list(ids)], device=lm.device))[0].float()
    finally:
        for h in handles:
            h.remove()
    return logits, acts


def atp_estimate(
    logits: torch.Tensor,
    acts: list,
    clean_values: torch.Tensor,
    cells: Sequence[tuple[int, int]],
    answer: int,
    against: int,
    metric: str = "logit-diff",
) -> np.ndarray:
    """Attribution patching (Nanda 2023; Kramár et al. 2024) from ``atp_forward``'s run: the
    metric with each cell patched, estimated to first order as corrupted metric + (clean -
    corrupted activation) · ∂metric/∂activation (one backward for every cell). Exact where
    the metric is linear in the activation; off where a softmax saturates (AtP*)."""
    with torch.inference_mode(False), torch.enable_grad():
        m = logits[answer] - logits[against] if metric != "prob" else (
            logits.softmax(-1)[answer])  # fmt: skip
        layers = sorted({la for la, _ in cells})
        grads = dict(zip(layers, torch.autograd.grad(m, [acts[la] for la in layers])))
    clean = clean_values.to(device=logits.device, dtype=torch.float32)
    base = float(m.detach())
    out = np.zeros(len(cells))
    for c, (la, p) in enumerate(cells):
        diff = clean[la, p] - acts[la][0, p].detach().float()
        out[c] = base + float(diff @ grads[la][0, p].float())
    return out


def atp_cells(
    lm: LoadedModel,
    corrupted_ids: Sequence[int],
    clean_values: torch.Tensor,
    cells: Sequence[tuple[int, int]],
    answer: int,
    against: int,
    metric: str = "logit-diff",
    component: str = "resid",
) -> np.ndarray:
    """``atp_estimate`` of a fresh ``atp_forward``: one forward and one backward for the grid.
    ``clean_values`` as for ``patch_cells`` (residual states, or ``component_outputs``)."""
    logits, acts = atp_forward(lm, corrupted_ids, component)
    return atp_estimate(logits, acts, clean_values, cells, answer, against, metric)


def agreement(cells, atp, exact, clean: float, corrupted: float) -> dict:
    """The rank agreement of AtP with exact patching over ``cells`` (both as recoveries):
    {n, spearman (None where undefined), cells, atp, exact}."""
    from backend.analysis.patching import spearman

    def rec(x):
        return (np.asarray(x, dtype=np.float64) - corrupted) / (clean - corrupted)

    a, e = rec(atp), rec(exact)
    rho = spearman(a, e)
    return {"n": len(cells), "spearman": None if rho is None else round(rho, 6),
            "cells": [[int(la), int(p)] for la, p in cells],
            "atp": a.round(6).tolist(), "exact": e.round(6).tolist()}  # fmt: skip
