"""Model code for sparse dictionaries: the spliced next-token loss ("loss recovered") and the
ablation of one latent keeping the dictionary's error term.

Residual edits at layer L go where ``ResidualRecorder`` reads the state: a forward pre-hook on
block 0 for L = 0, a forward hook on block L - 1 for L >= 1. Only the positions the dictionary
was trained on are edited (the non-special tokens); special tokens (BOS...) keep their state.

- splice: x -> x̂ = decode(encode(x)) (the reconstruction replaces the residual);
- mean-ablate: x -> μ, the layer's mean over the dictionary's training tokens;
- ablate latent F: x -> x − z_F(x) · W_dec[F] (the error term x − x̂ and every other latent
  are kept, so only F's contribution is removed).

The loss is the mean next-token cross-entropy over every predicted position (targets 1..T-1)
of each prompt, pooled over prompts (token-weighted).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from backend.analysis.features import SAE
from backend.capture.hooks import hook_residual
from backend.errors import LayerScopeError
from backend.models import LoadedModel


class ResidualEdit:
    """Replaces the residual at ``layer`` (rows 0, positions ``where``) by ``fn(states)``:
    ``fn`` maps a float32 numpy (n, d) to (n, d)."""

    def __init__(self, lm: LoadedModel, layer: int, fn: Callable, where: Sequence[int]):
        if not 0 <= layer <= len(lm.blocks):
            raise LayerScopeError(f"Layer {layer} is outside 0..{len(lm.blocks)} for this model.")
        self.lm, self.layer, self.fn = lm, layer, fn
        self.where = torch.as_tensor(list(where), dtype=torch.long)
        self._handles: list = []

    def _edit(self, h: torch.Tensor) -> torch.Tensor:
        if not len(self.where):
            return h
        w = self.where.to(h.device)
        x = h[0, w].float().cpu().numpy()
        new = torch.as_tensor(np.array(self.fn(x), dtype=np.float32), device=h.device)
        h = h.clone()
        h[0, w] = new.to(h.dtype)
        return h

    def __enter__(self) -> ResidualEdit:
        self._handles = hook_residual(self.lm.blocks, self.layer, self._edit)
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def logits_of(lm: LoadedModel, ids: Sequence[int]) -> torch.Tensor:
    """All positions' logits (T, vocab) of one prompt, float32."""
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([list(ids)], device=lm.device), use_cache=False)
    return out.logits[0].float()


def _nll_sum(lm: LoadedModel, ids: Sequence[int]) -> float:
    logits = logits_of(lm, ids)
    target = torch.tensor(list(ids)[1:], device=logits.device)
    return float(torch.nn.functional.cross_entropy(logits[:-1], target, reduction="sum"))


@dataclass(frozen=True)
class SplicedLoss:
    clean: float  #: mean next-token loss, no edit
    spliced: float  #: with the reconstruction replacing the residual at the layer
    ablated: float  #: with the layer's mean replacing it
    n_prompts: int
    n_tokens: int  #: predicted positions

    @property
    def recovered(self) -> float:
        """(L_ablate − L_splice) / (L_ablate − L_clean); NaN when ablating changes nothing."""
        gap = self.ablated - self.clean
        return (self.ablated - self.spliced) / gap if abs(gap) > 1e-12 else float("nan")

    def to_dict(self) -> dict:
        r = self.recovered
        return {
            "clean": round(self.clean, 6),
            "spliced": round(self.spliced, 6),
            "mean_ablated": round(self.ablated, 6),
            "loss_recovered": round(r, 6) if np.isfinite(r) else None,
            "n_prompts": self.n_prompts,
            "n_tokens": self.n_tokens,
        }


def spliced_loss(
    lm: LoadedModel,
    prompts: Sequence[tuple[Sequence[int], Sequence[bool]]],
    layer: int,
    sae: SAE,
    mean: np.ndarray,
) -> SplicedLoss:
    """Clean, spliced and mean-ablated loss over ``prompts`` (token ids, is-special flags)."""
    mean = np.asarray(mean, dtype=np.float32)

    def splice(x):
        return sae.decode_topk(*sae.encode_topk(x))

    def ablate(x):
        return np.broadcast_to(mean, x.shape)

    sums = np.zeros(3)
    n_tok = 0
    for ids, special in prompts:
        if len(ids) < 2:
            continue
        where = [i for i, s in enumerate(special) if not s]
        sums[0] += _nll_sum(lm, ids)
        with ResidualEdit(lm, layer, splice, where):
            sums[1] += _nll_sum(lm, ids)
        with ResidualEdit(lm, layer, ablate, where):
            sums[2] += _nll_sum(lm, ids)
        n_tok += len(ids) - 1
    if n_tok == 0:
        raise LayerScopeError("The held-out prompts are too short to measure a next-token loss.")
    c, s, a = sums / n_tok
    return SplicedLoss(clean=c, spliced=s, ablated=a, n_prompts=len(prompts), n_tokens=n_tok)


def ablate_latent(sae: SAE, feature: int) -> Callable:
    """x -> x − z_F(x) · W_dec[F] (the error term and the other latents kept)."""
    row = sae.W_dec[feature].astype(np.float32)

    def fn(x):
        idx, val = sae.encode_topk(x)
        z = (val * (idx == feature)).sum(1)
        return x - z[:, None] * row

    return fn


def ablated_states(lm: LoadedModel, ids: Sequence[int], layer: int, fn: Callable):
    """The run's residual states with ``fn`` applied at ``layer`` (each position on its own),
    for ``patching.patch_cells`` on the same prompt: (values, each block's output, the
    last-position logits, the unedited states)."""
    from backend.capture import patching as P

    states, outs, last = P.run_plain(lm, ids)
    values = states.clone()
    x = states[layer].float().cpu().numpy()
    values[layer] = torch.as_tensor(np.array(fn(x), dtype=np.float32)).to(values.dtype)
    return values, outs, last, states
