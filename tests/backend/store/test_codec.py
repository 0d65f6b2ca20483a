"""The numpy codec writes exactly the bytes torch's half-precision casts would (the store's
bytes did not change when capture records became numpy)."""

import numpy as np
import pytest
import torch

from backend.store import codec

RNG = np.random.default_rng(7)


def torch_encode(t: torch.Tensor) -> tuple[str, bytes]:
    """The store's codec before records became numpy (torch casts), kept as the reference."""
    if t.abs().max().item() < codec.FP16_MAX:
        return codec.F16, t.to(torch.float16).contiguous().numpy().tobytes()
    return codec.BF16, t.to(torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes()


def awkward_values(n: int = 200_000) -> np.ndarray:
    """Normals at many scales plus ties, subnormals, the fp16 edge and huge values."""
    x = RNG.normal(size=n).astype(np.float32) * np.float32(10.0) ** RNG.integers(-8, 8, n)
    bits = RNG.integers(0, 2**32, n // 4, dtype=np.uint64).astype(np.uint32)
    bits = bits[((bits >> 23) & 0xFF) != 0xFF]  # every finite float32 bit pattern may appear
    ties = (RNG.integers(0, 2**16, 1000).astype(np.uint32) << 16 | 0x8000).view(np.float32)
    ties = ties[np.isfinite(ties)]
    edge = np.array([65503.9, 65504.0, 65519.9, -65504.0, 6e-8, 3e-8, 1e-45, 0.0, -0.0], "f4")
    return np.concatenate([x, bits.view(np.float32), ties, edge]).astype(np.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_bytes_equal_torch_casts_per_layer(dtype):
    from backend.capture.extract import to_storage

    vals = awkward_values()
    small = vals[np.abs(vals) < 1000]
    for layer_vals in (small, vals):  # an fp16 layer, and a layer that needs bf16
        t = torch.from_numpy(layer_vals[: 96 * 64].copy()).reshape(96, 64)
        if dtype != torch.float32:
            t = t.to(dtype)
            if not torch.isfinite(t).all():
                t = t.clamp(-6e4, 6e4)  # an fp16 model never holds values beyond its range
        run = t[None]  # a one-layer run through the capture conversion
        got = codec.encode_run(to_storage(run), "r")[0]
        assert got == torch_encode(t), (dtype, got[0])


def test_bf16_rounds_to_nearest_even_like_torch():
    vals = awkward_values()
    vals = vals[np.abs(vals) < 3e38]
    want = torch.from_numpy(vals).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(codec._bf16_bits(vals), want)


def test_mixed_run_keeps_fp16_layers_and_bf16_layers():
    from backend.capture.extract import to_storage

    t = torch.randn(3, 5, 8)
    t[1, 2, 3] = 3.0e6
    h = to_storage(t)
    assert h.dtype == np.float32
    assert [c for c, _ in codec.encode_run(h, "r")] == ["f16", "bf16", "f16"]
    assert to_storage(torch.randn(3, 5, 8)).dtype == np.float16


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_non_finite_values_raise_naming_the_layer(bad, dtype):
    h = np.zeros((4, 2, 3), dtype=dtype)
    h[2, 1, 0] = bad
    with pytest.raises(ValueError, match="layer 2 of run abc holds NaN/inf"):
        codec.encode_run(h, "abc")


@pytest.mark.parametrize("threshold", [10**12, 1])  # serial, and split over threads
def test_gather_f16_puts_every_run_where_the_request_order_says(monkeypatch, threshold):
    monkeypatch.setattr(codec, "PARALLEL_VALUES", threshold)
    rng = np.random.default_rng(0)
    ns_db = rng.integers(1, 9, 37)
    flat = rng.normal(size=(int(ns_db.sum()), 5)).astype(np.float16)
    src = np.r_[0, np.cumsum(ns_db)]
    order = rng.permutation(37)  # stored row j is requested at position i
    ns = ns_db[order]
    dst = np.r_[0, np.cumsum(ns)]
    out = np.full((int(ns.sum()), 5), np.nan, dtype=np.float32)
    codec.gather_f16(out, flat, dst, src, order)
    want = np.concatenate([flat[src[j] : src[j + 1]] for j in order]).astype(np.float32)
    np.testing.assert_array_equal(out, want)
