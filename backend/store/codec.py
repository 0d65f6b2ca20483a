"""Half-precision vector blobs: fp16 normally, bf16 bits when values exceed fp16's range.

fp16 keeps 11 significant bits, bf16 only 8 but reaches 3e38: massive activations
(values in the thousands to millions) must never silently become inf.
"""

from __future__ import annotations

import numpy as np
import torch

FP16_MAX = 65504.0
F16 = "f16"
BF16 = "bf16"


def encode(t: torch.Tensor) -> tuple[str, bytes]:
    """(n_tokens, d_model) tensor of any float dtype -> (codec, little-endian bytes)."""
    if not torch.isfinite(t).all():
        raise ValueError("hidden state contains inf/nan; refusing to store it")
    if t.abs().max().item() < FP16_MAX:
        return F16, t.to(torch.float16).contiguous().cpu().numpy().tobytes()
    return BF16, t.to(torch.bfloat16).contiguous().cpu().view(torch.int16).numpy().tobytes()


def decode(codec: str, data: bytes, n_tokens: int, d_model: int) -> np.ndarray:
    """Bytes -> float32 array (n_tokens, d_model)."""
    if codec == F16:
        return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(n_tokens, d_model)
    if codec == BF16:
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(n_tokens, d_model)
    raise ValueError(f"unknown vector codec {codec!r}")


def decode_into(out: np.ndarray, codec: str, data: bytes) -> None:
    """Decode into a preallocated float32 view of shape (n_tokens, d_model)."""
    if codec == F16:
        out[...] = np.frombuffer(data, dtype="<f2").reshape(out.shape)
    else:
        out[...] = decode(codec, data, *out.shape)
