"""Half-precision vector blobs: fp16 normally, bf16 bits when values exceed fp16's range.

fp16 keeps 11 significant bits, bf16 only 8 but reaches 3e38: massive activations
(values in the thousands to millions) must never silently become inf. numpy only: the
bytes are bit-identical to torch's ``.to(torch.float16)`` / ``.to(torch.bfloat16)`` (both
round to nearest even; tests/backend/store/test_codec.py compares them).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from itertools import pairwise

import numpy as np

from backend.records import FP16_MAX

F16 = "f16"
BF16 = "bf16"
_F16_EXP = np.uint16(0x7C00)  #: fp16 exponent bits; all set = inf or NaN


def _bf16_bits(x32: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bits (uint16), round to nearest even (finite inputs)."""
    bits = np.ascontiguousarray(x32, dtype="<f4").view("<u4")
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype("<u2")


def encode_array(x: np.ndarray, what: str = "hidden state") -> tuple[str, np.ndarray]:
    """(n_tokens, d_model) float16/float32 array -> (codec, little-endian 2-byte array) whose
    bytes are the blob: float16 input as is (no copy when already little-endian); float32 as
    fp16 when every value is below fp16's limit, else as bf16 bits. NaN/inf raise ValueError
    naming ``what`` (e.g. "layer 3 of run ab12")."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        if ((x.view(np.uint16) & _F16_EXP) == _F16_EXP).any():
            raise ValueError(f"{what} holds NaN/inf; refusing to store it")
        return F16, x.astype("<f2", copy=False)
    x = x.astype(np.float32, copy=False)
    peak = np.abs(x).max(initial=0.0)
    if not np.isfinite(peak):
        raise ValueError(f"{what} holds NaN/inf; refusing to store it")
    if peak < FP16_MAX:
        return F16, x.astype("<f2")
    return BF16, _bf16_bits(x)


def encode(x: np.ndarray, what: str = "hidden state") -> tuple[str, bytes]:
    """(n_tokens, d_model) float16/float32 array -> (codec, little-endian bytes); see
    ``encode_array``."""
    c, arr = encode_array(x, what)
    return c, arr.tobytes()


def encode_run(hidden: np.ndarray, run_id: str) -> list[tuple[str, bytes]]:
    """Every layer of one run's (n_layers + 1, n_tokens, d_model) array -> [(codec, bytes)]."""
    return [encode(hidden[layer], f"layer {layer} of run {run_id}") for layer in range(len(hidden))]


def decode(codec: str, data: bytes, n_tokens: int, d_model: int) -> np.ndarray:
    """Bytes -> float32 array (n_tokens, d_model)."""
    if codec == F16:
        return np.frombuffer(data, dtype="<f2").astype(np.float32).reshape(n_tokens, d_model)
    if codec == BF16:
        bits = np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(n_tokens, d_model)
    raise ValueError(f"unknown vector codec {codec!r}")


def f16_view(blobs, n_rows: int, d_model: int) -> np.ndarray:
    """An Arrow binary array of fp16 blobs -> a zero-copy fp16 view (n_rows, d_model) of the
    array's contiguous data buffer (the blobs' rows, in array order)."""
    offsets_type = np.int64 if str(blobs.type).startswith("large_") else np.int32
    offs = np.frombuffer(blobs.buffers()[1], dtype=offsets_type)
    start, end = int(offs[blobs.offset]), int(offs[blobs.offset + len(blobs)])
    if end - start != n_rows * d_model * 2:
        raise ValueError("fp16 blobs do not match their (n_tokens, d_model) sizes")
    raw = np.frombuffer(blobs.buffers()[2], dtype=np.uint8, count=end - start, offset=start)
    return raw.view("<f2").reshape(n_rows, d_model)


def decode_into(out: np.ndarray, codec: str, data: bytes) -> None:
    """Decode into a preallocated float32 view of shape (n_tokens, d_model)."""
    if codec == F16:
        out[...] = np.frombuffer(data, dtype="<f2").reshape(out.shape)
    else:
        out[...] = decode(codec, data, *out.shape)


PARALLEL_VALUES = 4_000_000  #: reads at least this big cast on every core
_WORKERS = max(1, min(4, os.cpu_count() or 1))


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="cast")


def gather_f16(out: np.ndarray, flat: np.ndarray, dst, src, order) -> None:
    """out[dst[i]:dst[i+1]] = flat[src[j]:src[j+1]] (fp16 -> float32) for i, j in enumerate(order).

    A big read (one layer of 100k tokens: 77M values) splits the runs into one contiguous part
    per core, each cast on its own thread (NumPy releases the GIL while it casts)."""

    def part(a: int, b: int) -> None:
        for i in range(a, b):
            j = order[i]
            out[dst[i] : dst[i + 1]] = flat[src[j] : src[j + 1]]

    n, workers = len(order), _WORKERS
    if out.size < PARALLEL_VALUES or workers < 2 or n < 2:
        part(0, n)
        return
    # split at run boundaries into parts of about equal tokens
    cuts = np.searchsorted(dst, np.linspace(0, dst[-1], workers + 1)[1:-1]).tolist()
    bounds = [0, *cuts, n]
    futures = [_pool().submit(part, a, b) for a, b in pairwise(bounds) if b > a]
    for f in futures:
        f.result()
