"""Logit lens: what each layer 'would say' through the model's own final norm and unembedding.

Pure apart from calling the two torch modules it is given; works on stored residual streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LensResult:
    layers: tuple[int, ...]
    top_ids: np.ndarray  #: (n_layers, n_pos, k) token ids, most probable first
    top_probs: np.ndarray  #: (n_layers, n_pos, k)
    kl_to_final: np.ndarray  #: (n_layers, n_pos) KL(final || layer), nats
    entropy: np.ndarray  #: (n_layers, n_pos) nats
    final_rank: np.ndarray  #: (n_layers, n_pos) rank of the final layer's top-1 (0 = top)
    commitment: np.ndarray  #: (n_pos,) first layer from which the final top-1 stays top-1

    def __post_init__(self):
        if self.top_ids.shape[:2] != self.kl_to_final.shape:
            raise ValueError("inconsistent lens shapes")


def lens_logits(hidden: torch.Tensor, final_norm, unembed) -> torch.Tensor:
    """(n_layers, n_pos, d) -> (n_layers, n_pos, vocab) float32 logits."""
    with torch.inference_mode():
        p = next(unembed.parameters())
        h = hidden.to(p.dtype)
        h = final_norm(h) if final_norm is not None else h
        return unembed(h).float()


def logit_lens(hidden, final_norm, unembed, k: int = 5, layers=None) -> LensResult:
    """hidden: (n_layers + 1, n_pos, d) residual stream (numpy or torch); the last row is the
    model's last layer, whose lens equals the model's own logits."""
    h = torch.as_tensor(np.asarray(hidden, dtype=np.float32))
    if h.ndim != 3:
        raise ValueError("hidden must be (n_layers, n_pos, d_model)")
    logits = lens_logits(h, final_norm, unembed)
    logp = torch.log_softmax(logits, -1)
    probs = logp.exp()
    final = logp[-1]
    kl = (final.exp() * (final - logp)).sum(-1)
    ent = -(probs * logp).sum(-1)
    top_p, top_i = probs.topk(k, dim=-1)
    final_top = final.argmax(-1)  # (n_pos,)
    final_logit = logits.gather(-1, final_top.expand(logits.shape[0], -1).unsqueeze(-1))
    rank = (logits > final_logit).sum(-1)
    is_top = (rank == 0).numpy()
    n_l = is_top.shape[0]
    # first layer from which the final top-1 stays top-1 through the last layer
    stays = np.flip(np.logical_and.accumulate(np.flip(is_top, 0), axis=0), 0)
    commit = np.where(stays.any(0), n_l - stays.sum(0), n_l - 1)
    return LensResult(tuple(range(n_l)) if layers is None else tuple(layers),
                      top_i.numpy(), top_p.numpy(), kl.clamp_min(0).numpy(), ent.numpy(),
                      rank.numpy(), commit.astype(int))
