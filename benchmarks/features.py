"""Features speed: TopK SAE training and encoding throughput on GPT-2-small-shape states.

    python benchmarks/features.py [--tokens 20000] [--d 768] [--latents 4096] [--k 32]
                                  [--steps 40] [--encode 100000]

States: "random-ish" residuals with sparse structure (each token a sum of 24 of 8,192 random
unit directions with log-normal sizes, plus noise, a shared offset and two massive
dimensions), float32 as read from the store. Training: ``backend.analysis.features.train``
for ``--steps`` steps of 1,024 tokens (tokens/s; the held-out FVU after them is printed, not a
quality claim for so few steps). With ``--peer``, EleutherAI's sparsify SparseCoder is trained
and run on the same arrays in the same process. Encoding: ``SAE.encode_topk`` (numpy) over ``--encode``
tokens, against a plain dense reference (pre-activations, full argsort), the two checked
equal on the first 2,000 tokens.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.analysis import features as F


def timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def states(n: int, d: int, seed: int = 0) -> np.ndarray:
    shared = np.random.default_rng(1234)  # one distribution; ``seed`` draws tokens from it
    gens = shared.normal(size=(8192, d)).astype(np.float32)
    gens /= np.linalg.norm(gens, axis=1, keepdims=True)
    offset = shared.normal(size=d).astype(np.float32) * 2
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for a in range(0, n, 10_000):
        m = min(10_000, n - a)
        ids = rng.integers(0, len(gens), (m, 24))
        size = rng.lognormal(0.0, 0.5, (m, 24)).astype(np.float32)
        out[a : a + m] = np.einsum("mk,mkd->md", size, gens[ids]) + offset
    out += rng.normal(size=out.shape).astype(np.float32) * 0.1
    out[:, :2] *= 20  # massive dimensions, as in GPT-2's residual stream
    return out


def reference_encode(sae: F.SAE, x: np.ndarray) -> np.ndarray:
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    keep = np.argsort(-pre, axis=1, kind="stable")[:, : sae.k]
    z = np.zeros_like(pre)
    np.put_along_axis(z, keep, np.maximum(np.take_along_axis(pre, keep, 1), 0), 1)
    return z


def load_peer(path: str):
    """EleutherAI's sparsify (``pip install --no-deps --target PATH eai-sparsify einops natsort
    simple-parsing schedulefree docstring-parser accelerate``): only its SparseCoder, without the
    package's __init__ (which needs ``datasets`` for its trainer)."""
    import types

    sys.path.insert(0, path)
    pkg = types.ModuleType("sparsify")
    pkg.__path__ = [str(Path(path) / "sparsify")]
    sys.modules["sparsify"] = pkg
    from sparsify.config import SparseCoderConfig
    from sparsify.sparse_coder import SparseCoder

    return SparseCoder, SparseCoderConfig


def bench_peer(path: str, x: np.ndarray, held: np.ndarray, big: np.ndarray, a) -> None:
    """The peer's TopK SparseCoder, trained with the loop of its trainer (Adam at its default
    rate, gradient parallel to decoder rows removed, rows renormalised; no AuxK: no latent is
    dead within so few steps) on the same arrays, then its encoder over the same tokens."""
    import torch

    SparseCoder, Config = load_peer(path)
    torch.manual_seed(0)
    sae = SparseCoder(x.shape[1], Config(num_latents=a.latents, k=a.k))
    sae.b_dec.data = torch.from_numpy(x.mean(0))
    opt = torch.optim.Adam(sae.parameters(), lr=2e-4 / (a.latents / 2**14) ** 0.5)
    xt = torch.from_numpy(x)
    rng = np.random.default_rng(0)

    def step() -> None:
        b = xt[torch.from_numpy(rng.integers(0, len(xt), 1024))]
        out = sae(b)
        (out.fvu + out.auxk_loss / 32).backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sae.set_decoder_norm_to_unit_norm()

    step()  # the first step imports torch's compiler stack (seconds): not timed
    t_train, _ = timed(lambda: [step() for _ in range(a.steps - 1)])
    with torch.no_grad():
        h = torch.from_numpy(held)
        fvu = float(sae(h).fvu)

        def encode() -> None:
            for i in range(0, len(big), 8192):
                sae.encode(torch.from_numpy(big[i : i + 8192]))

        t_enc, _ = timed(encode)
    print(
        f"peer (sparsify SparseCoder): train {1024 * (a.steps - 1) / t_train:,.0f} tokens/s "
        f"(held-out FVU {fvu:.3f} after {a.steps} steps); encode {len(big):,} tokens "
        f"{t_enc:.2f} s = {len(big) / t_enc:,.0f} tokens/s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--latents", type=int, default=4096)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--encode", type=int, default=100_000)
    ap.add_argument("--peer", help="folder holding EleutherAI's sparsify (see load_peer)")
    a = ap.parse_args()
    a_ = np.random.default_rng(0).normal(size=(1024, a.d)).astype(np.float32)
    b_ = np.random.default_rng(1).normal(size=(a.d, a.latents)).astype(np.float32)
    t_mm = min(timed(lambda: a_ @ b_)[0] for _ in range(5))
    gflops = 2 * 1024 * a.d * a.latents / t_mm / 1e9
    print(
        f"cpu cores {os.cpu_count()}, load {os.getloadavg()[0]:.1f}, one 1024 x {a.d} x "
        f"{a.latents} matmul {t_mm * 1e3:.0f} ms = {gflops:.0f} GFLOPS (a training step is "
        "about 6 of them)"
    )
    x = states(a.tokens, a.d)
    held = states(4000, a.d, seed=1)
    marks = []  # (time, fraction) every 10 steps: the steady rate leaves out the set-up
    t0 = time.perf_counter()
    tr = F.train(
        F.array_source(x),
        len(x),
        a.latents,
        a.k,
        seed=0,
        tokens=a.steps * 1024,
        progress=lambda f: marks.append((time.perf_counter(), f)),
    )
    t_train = time.perf_counter() - t0
    q = F.evaluate(tr.sae, [held])
    steady = ""
    if len(marks) >= 2:
        (ta, fa), (tb, fb) = marks[0], marks[-1]
        steady = f", steady {(fb - fa) * tr.steps * 1024 / (tb - ta):,.0f} tokens/s"
    print(
        f"train: {tr.steps} steps x 1024 tokens, d {a.d}, {a.latents} latents, k {a.k}: "
        f"{t_train:.1f} s with set-up = {tr.tokens_seen / t_train:,.0f} tokens/s{steady} "
        f"(held-out FVU {q.fvu:.3f}, L0 {q.l0:.1f}, dead {q.dead_fraction:.3f})"
    )
    big = states(a.encode, a.d, seed=2)
    t0 = time.perf_counter()
    tr.sae.encode_topk(big)
    t_enc = time.perf_counter() - t0
    sub = big[:2000]
    t0 = time.perf_counter()
    ref = reference_encode(tr.sae, sub)
    t_ref = (time.perf_counter() - t0) * len(big) / len(sub)
    np.testing.assert_allclose(tr.sae.encode(sub), ref, rtol=1e-4, atol=1e-3)
    print(
        f"encode {len(big):,} tokens: {t_enc:.2f} s = {len(big) / t_enc:,.0f} tokens/s "
        f"(dense reference with a full argsort, scaled from 2,000: {t_ref:.1f} s; "
        f"{t_ref / t_enc:.1f}x; equal)"
    )
    if a.peer:
        bench_peer(a.peer, x, held, big, a)


if __name__ == "__main__":
    main()
