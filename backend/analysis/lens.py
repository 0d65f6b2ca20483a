"""Logit lens: what each layer 'would say' through the model's own final norm and unembedding.

Pure apart from calling the two torch modules it is given; works on stored residual streams
(layer 0 = embeddings, layer L = after block L), so the last layer's readout is exactly the
model's output. Layers are read out in chunks, so memory stays bounded for long prompts and
large vocabularies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


#: two probabilities within this relative tolerance are a tie (bf16 readouts of near-uniform
#: choices differ by rounding): the final answer counts as on top, and the grid says "= tie"
TIE_RTOL = 1e-3


@dataclass(frozen=True)
class LensResult:
    layers: tuple[int, ...]
    top_ids: np.ndarray  #: (n_layers, n_pos, k) token ids, most probable first
    top_probs: np.ndarray  #: (n_layers, n_pos, k)
    kl_to_final: np.ndarray  #: (n_layers, n_pos) KL(final || layer), nats
    entropy: np.ndarray  #: (n_layers, n_pos) nats
    final_rank: np.ndarray  #: (n_layers, n_pos) rank of the final layer's top-1 (0 = top)
    commitment: np.ndarray  #: (n_pos,) layer number from which the final top-1 stays on top
    #: (n_layers, n_pos) p(final top-1) / p(layer's top-1) at each layer (1 = on top)
    final_ratio: np.ndarray | None = None

    @property
    def on_top(self) -> np.ndarray:
        """(n_layers, n_pos) the final answer is the layer's top-1 or tied with it (within
        ``TIE_RTOL`` of its probability): what the commitment depth is made of."""
        top = self.final_rank == 0
        if self.final_ratio is None:
            return top
        return top | (self.final_ratio >= 1 - TIE_RTOL)

    @property
    def tied(self) -> np.ndarray:
        """(n_layers, n_pos) the cell's top-1 and top-2 are within ``TIE_RTOL``: a near-tie."""
        if self.top_probs.shape[-1] < 2:
            return np.zeros(self.kl_to_final.shape, bool)
        p = self.top_probs
        return p[..., 1] >= (1 - TIE_RTOL) * p[..., 0]

    def __post_init__(self):
        n_l, n_p = self.kl_to_final.shape
        if self.top_ids.shape[:2] != (n_l, n_p) or len(self.layers) != n_l:
            raise ValueError("inconsistent lens shapes")
        if self.commitment.shape != (n_p,):
            raise ValueError("one commitment depth per position is needed")


@dataclass(frozen=True)
class LensSummary:
    """A set's lens readouts per layer, over the chosen positions of every prompt."""

    layers: tuple[int, ...]
    n_positions: int
    kl_mean: np.ndarray  #: (n_layers,) mean KL(final || layer)
    kl_quantiles: np.ndarray  #: (n_layers, 3) 25th, 50th, 75th percentile
    entropy_mean: np.ndarray  #: (n_layers,)
    rank_median: np.ndarray  #: (n_layers,) median rank of the final top-1
    agreement: np.ndarray  #: (n_layers,) share of positions whose top-1 is (or ties) the final
    commitment_counts: np.ndarray  #: (n_layers,) positions committing at each layer


def lens_logits(hidden: torch.Tensor, final_norm, unembed) -> torch.Tensor:
    """(n_layers, n_pos, d) -> (n_layers, n_pos, vocab) float32 logits.

    The final norm runs in the model's dtype. A half-precision linear unembedding on a CPU
    without fast bf16/fp16 matmuls (no AMX) is applied in float32: there those matmuls are
    ~10x slower than float32 (GPT-2-small's 129 GFLOP lens grid: ~39 s vs ~5 s), and the
    float32 logits are the more exact ones."""
    import torch

    with torch.inference_mode():
        p = next(unembed.parameters())
        h = hidden.to(device=p.device, dtype=p.dtype)
        h = final_norm(h) if final_norm is not None else h
        w = getattr(unembed, "weight", None)
        if _slow_half(p) and isinstance(w, torch.Tensor) and w.ndim == 2:
            b = getattr(unembed, "bias", None)
            b = None if b is None else b.float()
            return torch.nn.functional.linear(h.float(), w.float(), b).cpu()
        return unembed(h).float().cpu()


def _slow_half(p: torch.Tensor) -> bool:
    """A bf16/fp16 parameter on a CPU whose half-precision matmuls are slow (no AMX)."""
    import torch

    if p.dtype not in (torch.bfloat16, torch.float16) or p.device.type != "cpu":
        return False
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return not (amx and amx())


def commitment_depth(is_top: np.ndarray) -> np.ndarray:
    """is_top (n_layers, n_pos) bool -> (n_pos,) index of the first layer from which every
    later layer has the final top-1 on top (the last layer always has it)."""
    n_l = is_top.shape[0]
    stays = np.flip(np.logical_and.accumulate(np.flip(is_top, 0), axis=0), 0)
    return np.where(stays.any(0), n_l - stays.sum(0), n_l - 1).astype(int)


def _bdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products of (R, V) tensors without materialising a * b."""
    import torch

    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2))[:, 0, 0]


def _readout(
    z: torch.Tensor, pf: torch.Tensor, neg_ent_f: torch.Tensor, target: torch.Tensor, k: int
) -> dict[str, torch.Tensor]:
    """Statistics of logits z (R, V) (shifted in place) against the final distribution pf
    (R, V), with neg_ent_f = sum pf log pf and target = final top-1 id, both (R,).

    With s = z - max, e = exp(s), S = sum e: entropy = log S - <e, s> / S and
    KL(final || layer) = sum pf log pf - <pf, s> + log S; five passes over the logits.
    """
    import torch

    z.sub_(z.amax(-1, keepdim=True))
    e = torch.exp(z)
    total = e.sum(-1)
    log_total = total.log()
    top_e, top_i = e.topk(k, -1)
    z_target = z.gather(-1, target[:, None])
    rank = (z > z_target).sum(-1)
    return {
        "ratio": torch.exp(z_target[:, 0]),  # p(target) / p(top-1), the max being shifted to 0
        "ids": top_i,
        "probs": top_e / total[:, None],
        "rank": rank,
        "ent": log_total - _bdot(e, z) / total,
        "kl": neg_ent_f - _bdot(pf, z) + log_total,
    }


def logit_lens(
    hidden, final_norm, unembed, k: int = 5, layers=None, chunk_bytes: float = 256e6
) -> LensResult:
    """hidden: (n_layers + 1, n_pos, d) residual stream (numpy or torch); the last row is the
    model's last layer, whose lens equals the model's own output distribution.

    Logits are computed in the unembedding's dtype (a bf16 model reads out in bf16, as it
    computes its own logits) where that dtype's matmul is fast, else in float32 (see
    :func:`lens_logits`), for as many layers at once as fit in ``chunk_bytes`` of float32
    logits; the statistics are float32.
    """
    import torch

    h = torch.as_tensor(np.asarray(hidden, dtype=np.float32))
    if h.ndim != 3 or h.shape[0] < 1 or h.shape[1] < 1:
        raise ValueError("hidden must be (n_layers, n_pos, d_model) with at least one position")
    n_l = h.shape[0]
    layers = tuple(range(n_l)) if layers is None else tuple(layers)
    final = lens_logits(h[-1:], final_norm, unembed)[0]  # (n_pos, vocab)
    if k > final.shape[-1]:
        raise ValueError(f"k = {k} is larger than the vocabulary ({final.shape[-1]})")
    with torch.inference_mode():
        logp_f = torch.log_softmax(final, -1)
        pf = logp_f.exp()
        neg_ent_f = _bdot(pf, logp_f)
        del logp_f
        target = final.argmax(-1)
        rows = [None] * n_l
        rows[-1] = _readout(final.clone(), pf, neg_ent_f, target, k)
        rows[-1]["kl"] = torch.zeros_like(rows[-1]["kl"])  # KL(p || p) = 0 (not float noise)
        # several layers per unembedding call (the matmul wants many rows), within a budget
        per = max(1, int(chunk_bytes // (4 * final.numel())))
        for a in range(0, n_l - 1, per):
            z = lens_logits(h[a : min(a + per, n_l - 1)], final_norm, unembed)
            for j in range(z.shape[0]):
                rows[a + j] = _readout(z[j], pf, neg_ent_f, target, k)
            del z
    cat = {n: torch.stack([r[n] for r in rows]).numpy() for n in rows[0]}
    on_top = (cat["rank"] == 0) | (cat["ratio"] >= 1 - TIE_RTOL)
    return LensResult(
        layers,
        cat["ids"],
        cat["probs"],
        np.clip(cat["kl"], 0, None),
        np.clip(cat["ent"], 0, None),
        cat["rank"],
        np.asarray(layers)[commitment_depth(on_top)],
        cat["ratio"],
    )


def summarize(results: list[LensResult], positions: str = "all") -> LensSummary:
    """Aggregate the lens of many prompts: ``positions`` 'all' or 'last' (the next-token
    prediction at the end of each prompt)."""
    if not results:
        raise ValueError("no lens results to summarise")
    if positions not in ("all", "last"):
        raise ValueError("positions must be 'all' or 'last'")
    layers = results[0].layers
    if any(r.layers != layers for r in results):
        raise ValueError("all lens results must cover the same layers")
    sl = slice(None) if positions == "all" else slice(-1, None)
    kl = np.concatenate([r.kl_to_final[:, sl] for r in results], 1)
    ent = np.concatenate([r.entropy[:, sl] for r in results], 1)
    rank = np.concatenate([r.final_rank[:, sl] for r in results], 1)
    on_top = np.concatenate([r.on_top[:, sl] for r in results], 1)
    commit = np.searchsorted(layers, np.concatenate([r.commitment[sl] for r in results]))
    return LensSummary(
        layers,
        kl.shape[1],
        kl.mean(1),
        np.quantile(kl, [0.25, 0.5, 0.75], axis=1).T,
        ent.mean(1),
        np.median(rank, 1),
        on_top.mean(1),
        np.bincount(commit, minlength=len(layers)),
    )
