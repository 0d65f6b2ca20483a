"""The Attention view: every layer × head attention pattern of one prompt, computed on demand
with an eager-attention instance of the model (``output_attentions``), with per-head sink
share and entropy. Shared by the Attention page and the `attention` CLI."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from backend.analysis.attention import entropy, sink_share
from backend.errors import LayerScopeError
from backend.store import Store


@dataclass(frozen=True, kw_only=True)
class Request:
    model: str
    prompt: str
    dtype: str = "auto"
    device: str = "cpu"

    def __post_init__(self):
        if not self.prompt.strip():
            raise LayerScopeError("Type a prompt.")


@dataclass(frozen=True)
class Result:
    request: Request
    tokens: list[str]
    attention: np.ndarray  #: (n_layers, n_heads, T_query, T_key); layer i = block i + 1
    sink_share: np.ndarray  #: (n_layers, n_heads)
    entropy: np.ndarray  #: (n_layers, n_heads), nats
    #: set when the prompt was cut to the model's positions: the patterns are of the cut prompt
    note: str | None = None

    @property
    def layers(self) -> list[int]:
        """Blocks are numbered as the residual layers they produce: 1..n_layers."""
        return list(range(1, self.attention.shape[0] + 1))

    def to_frame(self) -> pd.DataFrame:
        n_layers, n_heads = self.sink_share.shape
        return pd.DataFrame(
            {
                "layer": np.repeat(self.layers, n_heads),
                "head": np.tile(np.arange(n_heads), n_layers),
                "sink_share": self.sink_share.ravel(),
                "entropy": self.entropy.ravel(),
            }
        )

    def to_dict(self) -> dict:
        return {
            "tokens": list(self.tokens),
            "layers": self.layers,
            "attention": self.attention.round(5).tolist(),
            "sink_share": self.sink_share.round(5).tolist(),
            "entropy": self.entropy.round(5).tolist(),
            "truncated": self.note is not None,
            **({"note": self.note} if self.note else {}),
        }


@lru_cache(maxsize=2)
def _eager(path: str, model_id: str, dtype: str, device: str):
    """A separate eager-attention instance (sdpa / flash kernels return no weights)."""
    from backend import models

    with models._LOAD_LOCK:
        from transformers import AutoModel, AutoModelForCausalLM

        mref = models.resolve(path)
        causal = models.is_causal_config(models.read_config(mref))
        tdtype = models.pick_dtype(dtype, device, model=mref if dtype == "auto" else None)
        cls = AutoModelForCausalLM if causal else AutoModel
        model = cls.from_pretrained(
            mref.path, dtype=tdtype, use_safetensors=True, attn_implementation="eager"
        )
        return model.eval().to(device), models.load_tokenizer(mref.path)


def compute(store: Store | None, req: Request, lm=None) -> Result:
    import torch

    from backend import models
    from backend.capture import extract

    mref = models.resolve(req.model)
    models.check_device(req.device)
    model, tokenizer = _eager(str(mref.path), mref.model_id, req.dtype, req.device)
    limit = models.max_positions(model.config.to_dict())
    tk = extract.tokenize(tokenizer, [req.prompt], limit)[0]
    if len(tk.ids) < 2:
        raise LayerScopeError(
            f"The prompt has {len(tk.ids)} token(s); attention needs at least 2 to show."
        )
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([tk.ids], device=req.device), output_attentions=True)
    if not out.attentions or out.attentions[0] is None:
        raise LayerScopeError(f"{req.model} returned no attention weights.")
    att = torch.stack([a[0] for a in out.attentions]).float().cpu().numpy()
    from backend.views.lens import cut_note

    return Result(
        note=cut_note(tk.n_full, len(tk.ids)) if tk.truncated else None,
        request=req,
        tokens=extract.decode_tokens(tokenizer, tk.ids),
        attention=att,
        sink_share=sink_share(att),
        entropy=entropy(att),
    )
