"""Similarity speed: layer x layer CKA and prompt x prompt cosine vs naive loops, same run.

    python benchmarks/similarity.py [--units 2000] [--layers 25] [--dims 128 768] [--repeat 5]

Ours: backend.analysis.similarity (one cross-product pass, Gram or feature route).
Naive CKA: the usual loop over layer pairs, each computing Kornblith's feature-space formula
from scratch (centre both, three d x d products); when that would take long, a fixed sample
of pairs is timed and scaled to all pairs (printed as such).
Naive cosine: a Python loop over prompt pairs (np.dot / norms), and two library peers
(sklearn cosine_similarity, scipy cdist). Prints medians and ratios; numbers agree to 1e-5.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import timed

from backend.analysis import similarity as S


def naive_pair_cka(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean(0)
    y = y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def naive_cka_matrix(stack: np.ndarray, pairs: list[tuple[int, int]]) -> dict:
    return {(i, j): naive_pair_cka(stack[i], stack[j]) for i, j in pairs}


def bench_cka(n_layers: int, n: int, d: int, repeat: int, budget_s: float) -> dict:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(n, d))
    mix = rng.normal(size=(d, d)) / np.sqrt(d) * 0.3
    stack = np.stack([base + base @ mix for _ in range(n_layers)])  # correlated, like a residual
    stack = (stack + rng.normal(size=stack.shape) * 0.5).astype(np.float32)  # as stored
    S.cka_matrix(stack[:2])  # warm BLAS
    t_ours, ours = timed(lambda: S.cka_matrix(stack), repeat)
    t_deb, _ = timed(lambda: S.cka_matrix(stack, debiased=True), repeat)
    routes = {
        m: timed(lambda m=m: S.cka_matrix(stack, method=m), 3)[0] for m in ("gram", "feature")
    }
    pairs = [(i, j) for i in range(n_layers) for j in range(i, n_layers)]
    t_one, _ = timed(lambda: naive_cka_matrix(stack, pairs[:3]), 1)
    est = t_one / 3 * len(pairs)
    sample = pairs if est <= budget_s else pairs[:: max(1, len(pairs) // 24)]
    t_naive, ref = timed(lambda: naive_cka_matrix(stack, sample), 1)
    t_naive_all = t_naive / len(sample) * len(pairs)
    err = max(abs(ours[i, j] - v) for (i, j), v in ref.items())
    return {
        "d": d,
        "ours": t_ours,
        "debiased": t_deb,
        "naive": t_naive_all,
        "naive_pairs": f"{len(sample)}/{len(pairs)}",
        "max_abs_diff": err,
        **routes,
    }


def bench_cosine(n: int, d: int, repeat: int) -> dict:
    from scipy.spatial.distance import cdist
    from sklearn.metrics.pairwise import cosine_similarity

    x = np.random.default_rng(1).normal(size=(n, d)).astype(np.float32)
    t_ours, ours = timed(lambda: S.cosine_matrix(x), repeat)
    t_order, _ = timed(lambda: S.cluster_order(ours), max(1, repeat // 2))
    t_sk, sk = timed(lambda: cosine_similarity(x), repeat)
    t_cd, _ = timed(lambda: 1 - cdist(x, x, "cosine"), max(1, repeat // 2))

    def loop():
        out = np.empty((n, n), dtype=np.float32)
        norms = [float(np.sqrt(np.dot(v, v))) for v in x]
        for i in range(n):
            for j in range(i, n):
                out[i, j] = out[j, i] = np.dot(x[i], x[j]) / (norms[i] * norms[j])
        return out

    t_loop, naive = timed(loop, 1)
    err = float(max(np.abs(ours - naive).max(), np.abs(ours - sk).max()))
    return {
        "d": d,
        "ours": t_ours,
        "cluster_order": t_order,
        "sklearn": t_sk,
        "cdist": t_cd,
        "loop": t_loop,
        "max_abs_diff": err,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=25)
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 768])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--naive-budget",
        type=float,
        default=60.0,
        help="seconds the full naive CKA loop may take before it is sampled",
    )
    a = ap.parse_args()
    print(
        f"# {a.layers} layers x {a.units} units; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs; medians of {a.repeat}"
    )
    print("\n## layer x layer linear CKA")
    print(
        "| d_model | ours (auto) | gram | feature | debiased | naive pair loop | "
        "naive / ours | max |diff| |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in a.dims:
        r = bench_cka(a.layers, a.units, d, a.repeat, a.naive_budget)
        print(
            f"| {d} | {r['ours']:.3f} s | {r['gram']:.3f} s | {r['feature']:.3f} s | "
            f"{r['debiased']:.3f} s | {r['naive']:.2f} s ({r['naive_pairs']} pairs timed) | "
            f"{r['naive'] / r['ours']:.0f}x | {r['max_abs_diff']:.1e} |",
            flush=True,
        )
    print(f"\n## prompt x prompt cosine ({a.units} x {a.units})")
    print(
        "| d_model | ours | sklearn | scipy cdist | python pair loop | loop / ours | "
        "sklearn / ours | + cluster order | max |diff| |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for d in a.dims:
        r = bench_cosine(a.units, d, a.repeat)
        print(
            f"| {d} | {r['ours']:.3f} s | {r['sklearn']:.3f} s | {r['cdist']:.3f} s | "
            f"{r['loop']:.2f} s | {r['loop'] / r['ours']:.0f}x | "
            f"{r['sklearn'] / r['ours']:.1f}x | {r['cluster_order']:.3f} s | "
            f"{r['max_abs_diff']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
