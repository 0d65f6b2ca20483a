"""Steering: generate while adding a direction to the residual stream after block L.

At layer L the hook adds ``alpha * unit * typical_norm`` to the residual state of every
position (or of every position from ``start`` on), on the prompt and on each generated token.
``unit`` is the direction scaled to length 1 and ``typical_norm`` the median L2 norm of that
layer's *unsteered* residual states over the prompt's tokens (measured in the same forward
pass, before anything is added, unless passed in): so α is in units of the layer's typical
norm, comparable across layers and models (α = 1 adds a vector as long as a typical state).

Layer 0 is the input of block 0 (a forward pre-hook), layer L ≥ 1 the output of block L - 1
(a forward hook), as ``ResidualRecorder`` records them. One batch = one prompt, one row per
(direction, α): the rows share the prompt, so no padding is needed. Decoding is greedy, or
sampled with the per-sample seeds of ``capture.generate`` (row r draws from a generator
seeded with ``sample_seed(seed, prompt, sample)``), so α = 0 reproduces plain generation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from backend.capture import extract
from backend.capture.generate import _cache_of, _forward, max_positions, sample_next
from backend.capture.hooks import hook_residual
from backend.errors import LayerScopeError
from backend.models import LoadedModel
from backend.records import Sampling, sample_seed


class SteeringHook:
    """Adds ``coef[r] * unit[r]`` (times the typical norm) to row r of the residual stream at
    ``layer``, at every position >= ``start``; keeps track of absolute positions across the
    cached decoding steps. ``norm`` is measured on the first call (the prompt) when None."""

    def __init__(
        self,
        lm: LoadedModel,
        layer: int,
        units: torch.Tensor,  # (rows, d) unit vectors
        alphas: Sequence[float],
        start: int = 0,
        norm: float | None = None,
    ):
        n_layers = len(lm.blocks)
        if not 0 <= layer <= n_layers:
            raise LayerScopeError(f"Layer {layer} does not exist: the model has 0..{n_layers}.")
        self.lm, self.layer, self.start, self.norm = lm, layer, max(0, int(start)), norm
        self.units = units.to(device=lm.device, dtype=torch.float32)
        self.coefs = torch.tensor(list(alphas), dtype=torch.float32, device=lm.device)
        self.offset = 0
        self._handles: list = []

    def _add(self, h: torch.Tensor) -> torch.Tensor:
        T = h.shape[1]
        if self.norm is None:  # the prompt's unsteered states at this layer
            self.norm = float(h[0].float().norm(dim=-1).median())
        first = max(0, self.start - self.offset)
        self.offset += T
        if first >= T:
            return h
        delta = (self.coefs[:, None] * self.units) * self.norm  # (rows, d)
        h = h.clone()
        h[:, first:] = (h[:, first:].float() + delta[:, None, :]).to(h.dtype)
        return h

    def __enter__(self) -> SteeringHook:
        self._handles = hook_residual(self.lm.blocks, self.layer, self._add)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@dataclass(frozen=True)
class Steered:
    """Generated token ids per row (cut after <eos>), and the typical norm that was used."""

    new_ids: list[list[int]]
    typical_norm: float
    #: with ``capture``: per row, (n_layers + 1, n_prompt + n_generated, d) residual states as
    #: the steered model computed them (storage precision, ``extract.to_storage``)
    hidden: list | None = None
    prompt: object = None  #: with ``capture``: the tokenised prompt (ids, offsets, special)


def unit(v) -> torch.Tensor:
    v = torch.as_tensor(v, dtype=torch.float32).flatten()
    n = float(v.norm())
    if not n > 0:
        raise LayerScopeError("The steering direction is zero: there is nothing to add.")
    return v / n


def steer_generate(
    lm: LoadedModel,
    text: str,
    layer: int,
    units: torch.Tensor,
    alphas: Sequence[float],
    max_new_tokens: int = 8,
    sampling: Sampling | None = None,
    sample: int = 0,
    start: int = 0,
    norm: float | None = None,
    capture: bool = False,
) -> Steered:
    """Continuations of ``text``, row r steered by ``alphas[r] * units[r] * typical_norm``.

    ``sampling`` None = greedy; else every row samples with the seed of sample ``sample`` of
    ``capture.generate`` (``sample_seed(sampling.seed, text, sample)``), so the rows differ
    only by their steering. ``capture`` also records every layer's (steered) residual states
    of every row, prompt and generated tokens, as ``capture.generate`` does."""
    if not lm.info.is_causal:
        raise LayerScopeError(f"{lm.info.ref} is not a causal language model: it cannot generate.")
    units = torch.as_tensor(units, dtype=torch.float32)
    if units.ndim == 1:
        units = units[None].expand(len(alphas), -1)
    d = lm.info.d_model
    if units.shape != (len(alphas), d):
        raise LayerScopeError(
            f"The steering direction has {units.shape[-1]} values; the residual stream of "
            f"{lm.info.ref} has d_model = {d}."
        )
    prompt = extract.tokenize(lm.tokenizer, [text])[0]
    n_p = len(prompt.ids)
    limit = max_positions(lm)
    n_new = max_new_tokens if limit is None else min(max_new_tokens, limit - n_p)
    if n_new < 1:
        raise LayerScopeError(
            f"The prompt has {n_p} tokens and {lm.info.ref} reads at most {limit}: "
            "there is no room to generate."
        )
    n = len(alphas)
    gens = None
    if sampling is not None:
        seed = sample_seed(sampling.seed, text, sample)
        gens = [torch.Generator(device=lm.device).manual_seed(seed) for _ in range(n)]
    eos = lm.tokenizer.eos_token_id
    new = torch.zeros((n, n_new), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    steps = 0
    buf = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        hook = stack.enter_context(SteeringHook(lm, layer, units, alphas, start, norm))
        # registered after the steering hook: records the states as steered
        rec = stack.enter_context(extract.ResidualRecorder(lm)) if capture else None
        out = _forward(lm, torch.tensor([prompt.ids] * n, device=lm.device))
        if rec is not None:
            d_ = rec.states[0].shape[-1]
            buf = torch.empty((len(rec.states), n, n_p + n_new, d_), dtype=rec.states[0].dtype)
            for li, st in enumerate(rec.states):
                buf[li, :, :n_p] = st
        for k in range(n_new):
            logits = out.logits[:, -1]
            nxt = logits.float().argmax(-1) if gens is None else sample_next(logits, sampling, gens)
            new[:, k] = nxt.cpu()
            steps = k + 1
            if eos is not None:
                done |= new[:, k] == eos
            last = bool(done.all()) or k == n_new - 1
            if last and rec is None:
                break
            out = _forward(lm, nxt[:, None], _cache_of(out))
            if rec is not None:  # the states of the token just fed (the last one too)
                for li, st in enumerate(rec.states):
                    buf[li, :, n_p + k] = st[:, -1]
            if last:
                break
    rows = []
    for r in range(n):
        g = new[r, :steps].tolist()
        rows.append(g[: g.index(eos) + 1] if eos in g else g)
    hidden = None
    if buf is not None:
        hidden = [extract.to_storage(buf[:, r, : n_p + len(g)]) for r, g in enumerate(rows)]
    return Steered(rows, float(hook.norm), hidden, prompt if capture else None)
