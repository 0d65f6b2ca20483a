"""Direct logit attribution: the next-token logit difference logit(answer) - logit(against)
(or logit(answer) alone) at one position, split into what each part of the model wrote into
the residual stream.

One forward pass with hooks records the input of block 0 (the embeddings), each block's
attention and MLP outputs (``attn`` / ``self_attn`` / ``attention`` and ``mlp``: GPT-2,
Llama / Qwen / Mistral, GPT-NeoX parallel or sequential residual: all of them add both
outputs to the stream), the input of each attention output projection (``c_proj`` /
``o_proj`` / ``dense``: the heads' outputs side by side), the values and, with eager
attention, the attention weights. The final norm's scale is frozen at this run (LayerNorm:
subtract the mean, divide by this run's std, multiply by the weight; RMSNorm: divide by this
run's rms, multiply by the weight), which makes the logit a linear function of the residual
stream: every component projects through one readout vector, and the norm's bias and the
unembedding's bias become ``bias`` terms. The parts sum to the model's logit difference up to
float rounding (checked against the model's own logits here; a mismatch is an error).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.capture.patching import component_module
from backend.errors import LayerScopeError
from backend.models import LoadedModel

_OUT_PROJ = ("c_proj", "o_proj", "dense", "out_proj")


@dataclass(frozen=True)
class Trace:
    """One forward pass of one prompt (batch of 1), float32 on the CPU; rows are positions."""

    embed: torch.Tensor  #: (T, d) the input of block 0
    inputs: list  #: [(T, d)] the input of each block (the residual stream before it)
    attn: list  #: [(T, d)] each block's attention output (output projection bias included)
    mlp: list  #: [(T, d)]
    final: torch.Tensor  #: (T, d) the input of the final norm
    z: list  #: [(T, n_heads, head_dim)] the input of each attention output projection
    values: list | None  #: [(T, n_heads, head_dim)] values per query head (GQA repeated)
    pattern: list | None  #: [(n_heads, T, T)] attention weights (eager attention only)
    logits: torch.Tensor  #: (T, vocab) the model's own logits


@dataclass(frozen=True)
class Attribution:
    """Each part's share of the target logit (difference) at one position, in logits."""

    position: int
    logit_diff: float  #: what the model's forward pass gives
    embed: float
    attn: np.ndarray  #: (n_layers,) block l + 1's attention output
    mlp: np.ndarray  #: (n_layers,)
    bias: dict  #: name -> value: the final norm's bias, the unembedding's bias
    heads: np.ndarray  #: (n_layers, n_heads) each head through its slice of the output proj
    head_bias: np.ndarray  #: (n_layers,) the output projection's bias (attn = heads + bias)

    @property
    def total(self) -> float:
        return float(self.embed + self.attn.sum() + self.mlp.sum() + sum(self.bias.values()))


def out_proj(attn: torch.nn.Module) -> torch.nn.Module:
    for name in _OUT_PROJ:
        m = getattr(attn, name, None)
        if isinstance(m, torch.nn.Module) and hasattr(m, "weight"):
            return m
    raise LayerScopeError(
        f"Could not find the output projection of a {type(attn).__name__} module "
        f"(looked for {', '.join(_OUT_PROJ)})."
    )


def out_weight(proj: torch.nn.Module) -> torch.Tensor:
    """The output projection as (n_heads * head_dim, d): nn.Linear stores (out, in),
    GPT-2's Conv1D (in, out)."""
    w = proj.weight
    return w.T if isinstance(proj, torch.nn.Linear) else w


def n_heads(lm: LoadedModel) -> int:
    cfg = lm.model.config
    for name in ("num_attention_heads", "n_head", "num_heads"):
        if getattr(cfg, name, None):
            return int(getattr(cfg, name))
    raise LayerScopeError("Could not read the number of attention heads from the config.")


def _values(attn: torch.nn.Module, out: torch.Tensor, heads: int, head_dim: int):
    """Values per query head (T, heads, head_dim) from the output of the module that makes
    them (batch row 0), or None for a layout not known here."""
    o = out[0]
    T = o.shape[0]
    if hasattr(attn, "v_proj"):  # Llama, Qwen, Mistral: GQA, kv head = query head // group
        v = o.reshape(T, -1, head_dim)
        return v.repeat_interleave(heads // v.shape[1], dim=1)
    if hasattr(attn, "c_attn"):  # GPT-2: q, k, v side by side
        return o[:, 2 * heads * head_dim :].reshape(T, heads, head_dim)
    if hasattr(attn, "query_key_value"):  # GPT-NeoX: per head q, k, v
        return o.reshape(T, heads, 3 * head_dim)[..., 2 * head_dim :]
    return None


def _value_module(attn: torch.nn.Module):
    for name in ("v_proj", "c_attn", "query_key_value"):
        m = getattr(attn, name, None)
        if isinstance(m, torch.nn.Module):
            return m
    return None


def _first(x):
    return x[0] if isinstance(x, tuple) else x


def trace(lm: LoadedModel, ids) -> Trace:
    """One forward pass of ``ids`` with everything attribution needs recorded."""
    L, H = len(lm.blocks), n_heads(lm)
    rec: dict = {"inputs": [None] * L, "attn": [None] * L, "mlp": [None] * L,
                 "z": [None] * L, "v": [None] * L, "pattern": [None] * L}  # fmt: skip
    f32 = lambda t: t.detach()[0].float().cpu()  # noqa: E731
    handles = []

    def put(kind, i, t):
        rec[kind][i] = f32(t)

    for i, block in enumerate(lm.blocks):
        attn, mlp = component_module(block, "attn"), component_module(block, "mlp")
        proj = out_proj(attn)

        def pre_block(_m, args, kwargs, i=i):
            put("inputs", i, args[0] if args else kwargs["hidden_states"])

        def post_attn(_m, _a, out, i=i):
            put("attn", i, _first(out))
            if isinstance(out, tuple) and len(out) > 1 and isinstance(out[1], torch.Tensor):
                put("pattern", i, out[1])

        def pre_proj(_m, args, i=i):
            put("z", i, args[0])

        handles += [
            block.register_forward_pre_hook(pre_block, with_kwargs=True),
            attn.register_forward_hook(post_attn),
            mlp.register_forward_hook(lambda _m, _a, out, i=i: put("mlp", i, _first(out))),
            proj.register_forward_pre_hook(pre_proj),
        ]
        vmod = _value_module(attn)
        if vmod is not None:
            handles.append(vmod.register_forward_hook(
                lambda _m, _a, out, i=i, a=attn: rec["v"].__setitem__(i, (a, out.detach()))))  # fmt: skip
    final: list = [None]
    if lm.final_norm is not None:
        handles.append(lm.final_norm.register_forward_pre_hook(
            lambda _m, args: final.__setitem__(0, f32(args[0]))))  # fmt: skip
    try:
        with torch.inference_mode():
            out = lm.model(input_ids=torch.tensor([list(ids)], device=lm.device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
    if final[0] is None:
        raise LayerScopeError("Attribution needs a model with a final normalisation layer.")
    if any(x is None for k in ("inputs", "attn", "mlp", "z") for x in rec[k]):
        raise LayerScopeError("Could not record every block's attention and MLP outputs.")
    z = [t.reshape(t.shape[0], H, -1) for t in rec["z"]]
    hd = z[0].shape[-1]
    values = [None if r is None else _values(r[0], r[1].float().cpu(), H, hd) for r in rec["v"]]
    pattern = rec["pattern"] if all(p is not None for p in rec["pattern"]) else None
    if any(v is None for v in values):
        values = None
    elif pattern is not None:  # the values are the ones the heads mixed: check
        mixed = [torch.einsum("hij,jhk->ihk", p, v) for p, v in zip(pattern, values)]
        if any(not torch.allclose(m, zz, atol=1e-3, rtol=1e-2) for m, zz in zip(mixed, z)):
            values = None
    return Trace(embed=rec["inputs"][0], inputs=rec["inputs"], attn=rec["attn"], mlp=rec["mlp"],
                 final=final[0], z=z, values=values, pattern=pattern,
                 logits=out.logits[0].float().cpu())  # fmt: skip


def frozen_norm(norm: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, bool, torch.Tensor]:
    """The final norm at one residual vector ``x`` (d,) as an affine map with its scale frozen:
    (per-dimension factor, whether the mean is subtracted first, bias), float64. The kind
    (LayerNorm, RMSNorm, RMSNorm with weight 1 + w) is the one that reproduces the module's
    own output on ``x``."""
    x64 = x.double()
    p = next(norm.parameters(), None)
    with torch.inference_mode():
        actual = norm(x.to(p.dtype if p is not None else x.dtype)[None])[0].double().cpu()
    w = norm.weight.detach().double().cpu() if getattr(norm, "weight", None) is not None else 1.0
    b = getattr(norm, "bias", None)
    b = b.detach().double().cpu() if isinstance(b, torch.Tensor) else torch.zeros_like(x64)
    eps = next((float(getattr(norm, n)) for n in ("eps", "variance_epsilon", "epsilon")
                if isinstance(getattr(norm, n, None), (int, float))), 1e-5)  # fmt: skip
    centred = x64 - x64.mean()
    candidates = [
        (w / torch.sqrt(centred.pow(2).mean() + eps), True),
        (w / torch.sqrt(x64.pow(2).mean() + eps), False),
        ((1 + w) / torch.sqrt(x64.pow(2).mean() + eps), False),
    ]
    tol = 1e-3 if p is None or p.dtype == torch.float32 or p.dtype == torch.float64 else 3e-2
    for factor, centre in candidates:
        guess = (centred if centre else x64) * factor + b
        if torch.allclose(guess, actual, atol=tol * (1 + actual.abs().max().item()), rtol=0):
            return factor * torch.ones_like(x64), centre, b
    raise LayerScopeError(
        f"Could not freeze the final normalisation ({type(norm).__name__}): it is neither a "
        "LayerNorm nor an RMSNorm."
    )


def readout(lm: LoadedModel, tr: Trace, position: int, answer: int, against: int | None):
    """(readout vector r (d,), bias terms {name: value}): the target logit difference at
    ``position`` is r · (residual vector) + the bias terms, float64."""
    W = lm.unembed.weight.detach()
    u = W[answer].double().cpu()
    if against is not None:
        u = u - W[against].double().cpu()
    factor, centre, b = frozen_norm(lm.final_norm, tr.final[position])
    r = u * factor
    if centre:  # u · ((v - mean v) * f) = (r - mean r) · v
        r = r - r.mean()
    bias = {"final norm bias": float(u @ b)}
    ub = getattr(lm.unembed, "bias", None)
    if isinstance(ub, torch.Tensor):
        ubd = ub.detach().double().cpu()
        bias["unembedding bias"] = float(ubd[answer] - (ubd[against] if against is not None else 0))
    return r, bias


def head_vectors(lm: LoadedModel, tr: Trace, layer: int, position: int) -> torch.Tensor:
    """(n_heads, d) float64: head h's output at ``position`` through its slice of block
    ``layer``'s (0-based) output projection."""
    z = tr.z[layer][position].double()  # (H, hd)
    H, hd = z.shape
    W = out_weight(out_proj(component_module(lm.blocks[layer], "attn"))).detach().double().cpu()
    return torch.einsum("hk,hkd->hd", z, W.reshape(H, hd, -1))


def proj_bias(lm: LoadedModel, layer: int) -> torch.Tensor | None:
    b = getattr(out_proj(component_module(lm.blocks[layer], "attn")), "bias", None)
    return b.detach().double().cpu() if isinstance(b, torch.Tensor) else None


def attribute(
    lm: LoadedModel, tr: Trace, position: int, answer: int, against: int | None
) -> Attribution:
    """Direct logit attribution at ``position`` (0-based, already resolved)."""
    L = len(lm.blocks)
    r, bias = readout(lm, tr, position, answer, against)
    dot = lambda v: float(r @ v.double())  # noqa: E731
    parts = tr.embed[position].double() + sum(
        tr.attn[i][position].double() + tr.mlp[i][position].double() for i in range(L)
    )
    fin = tr.final[position].double()
    if (parts - fin).norm() > 1e-3 * (1 + fin.norm()):
        raise LayerScopeError(
            "The embeddings plus every block's attention and MLP outputs do not add up to the "
            "residual stream at the final norm: this architecture transforms the stream in a "
            "way attribution does not cover (it covers GPT-2, Llama, Qwen, Mistral, GPT-NeoX)."
        )
    heads = np.zeros((L, n_heads(lm)))
    head_bias = np.zeros(L)
    for i in range(L):
        heads[i] = (head_vectors(lm, tr, i, position) @ r).numpy()
        b = proj_bias(lm, i)
        head_bias[i] = float(r @ b) if b is not None else 0.0
    ld = tr.logits[position, answer] - (tr.logits[position, against] if against is not None else 0)
    return Attribution(
        position=position,
        logit_diff=float(ld),
        embed=dot(tr.embed[position]),
        attn=np.array([dot(tr.attn[i][position]) for i in range(L)]),
        mlp=np.array([dot(tr.mlp[i][position]) for i in range(L)]),
        bias=bias,
        heads=heads,
        head_bias=head_bias,
    )


def source_parts(lm: LoadedModel, tr: Trace, layer: int, targets) -> torch.Tensor:
    """(len(targets), T, d) float32: block ``layer``'s (0-based) attention output at each
    target position split by source position j: sum over heads of weight(i, j) × value_j
    through the head's slice of the output projection (the output bias is not included)."""
    if tr.pattern is None or tr.values is None:
        raise LayerScopeError(
            "The contribution graph needs the attention weights and values of every head: load "
            "the model with eager attention (GPT-2, Llama, Qwen, Mistral, GPT-NeoX layouts)."
        )
    v = tr.values[layer]  # (T, H, hd)
    _, H, hd = v.shape
    W = out_weight(out_proj(component_module(lm.blocks[layer], "attn"))).detach().float().cpu()
    vo = torch.einsum("jhk,hkd->hjd", v, W.reshape(H, hd, -1))  # (H, T, d)
    return torch.einsum("hij,hjd->ijd", tr.pattern[layer][:, targets], vo)
