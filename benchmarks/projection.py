"""Trajectory projections: our PCA / aligned PCA / UMAP vs scikit-learn's PCA, same data.

    python benchmarks/projection.py              # 13 layers x 10k tokens x d=768, 5 repeats
    python benchmarks/projection.py --quick      # smoke run: 13 x 1k x 128, 2 repeats
    python benchmarks/projection.py --page       # also: the demo page's rerun on a colour change

Data: synthetic residual-like vectors (float32, fixed seed): 10 clusters that drift and spread
with depth, a large shared offset (as real residual streams have) and per-dimension scales.
Methods run interleaved (ours, sklearn, ours, ...) so load from other processes on the shared
2-core machine hits all alike; medians are reported, with ratios against sklearn PCA.

- ours pca: ``project(x, layers, "pca")`` = one PCA over all 130k vectors, 2 components;
- sklearn PCA: ``PCA(2).fit_transform`` on the same (130k, 768) float32 matrix (auto solver);
- ours aligned: one PCA per layer + orthogonal Procrustes to the previous layer;
- figure: ``trajectory_figure`` (label colours, 13 animation frames, lines) + ``to_json``,
  i.e. the server work of a colour change once the projection is cached;
- umap: ``project(..., "umap")`` on 10k points (one layer of 10k tokens, PCA-50 first), after
  ``warm_umap()`` paid numba's compilation; also umap-learn with its defaults on the same
  PCA-50 input (500 epochs at 10k points) for reference;
- cache: store round trip of a cached 10k-point UMAP result (reopening a view).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

import pandas as pd
from sklearn.decomposition import PCA

from backend.analysis.projection import pca_fit, project, warm_umap
from backend.figures.trajectories import trajectory_figure
from backend.store import Store
from backend.views import trajectories as TV


def synthetic(n_layers: int, n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n_layers, n, d) float32 with 10 labelled clusters that separate with depth."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 10, n)
    centres = rng.normal(size=(10, d)).astype(np.float32)
    scale = np.linspace(0.5, 2.0, d, dtype=np.float32)
    offset = (rng.normal(size=d) * 20).astype(np.float32)
    x = np.empty((n_layers, n, d), np.float32)
    for li in range(n_layers):
        sep = li / max(n_layers - 1, 1) * 3
        x[li] = (
            rng.normal(size=(n, d)).astype(np.float32) * scale
            + sep * centres[lab]
            + offset * (1 + li / 4)
        )
    return x, lab


def timed(fn, repeat: int) -> tuple[float, list[float]]:
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def interleaved(fns: dict, repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def check_pca(x: np.ndarray) -> float:
    """Max |difference| of our PCA scores and sklearn's (up to sign), relative to their range."""
    flat = x.reshape(-1, x.shape[-1])
    ours = project(x, list(range(len(x))), "pca").coords.reshape(-1, 2)
    ref = PCA(2).fit_transform(flat)
    err = 0.0
    for k in range(2):
        s = np.sign(ours[:, k] @ ref[:, k])
        err = max(err, float(np.abs(ours[:, k] - s * ref[:, k]).max() / np.ptp(ref[:, k])))
    return err


def page_rerun(repeat: int) -> dict[str, float]:
    """AppTest on the demo agreement set: first open, then reruns after a colour change."""
    import os
    import tempfile

    from streamlit.testing.v1 import AppTest

    from backend.cli import main

    db = Path(tempfile.mkdtemp()) / "bench.duckdb"
    main(["extract", "--db", str(db), "--model", "demo", "--set", "agreement", "--json"])
    os.environ["LAYERSCOPE_DB"] = str(db)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params.update({"model": "demo", "set": "agreement"})
    at.switch_page("pages/trajectories.py")
    t = time.perf_counter()
    at.run()
    first = time.perf_counter() - t
    ts = []
    for i in range(repeat):
        at.selectbox(key="qp_color").set_value(["group", "label"][i % 2])
        t = time.perf_counter()
        at.run()
        ts.append(time.perf_counter() - t)
    assert not at.exception, at.exception
    return {"first open": first, "colour change (median)": statistics.median(ts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--page", action="store_true")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    n_layers, n, d, repeat = (13, 1000, 128, 2) if a.quick else (13, 10_000, 768, a.repeat)
    print(
        f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, "
        f"{n_layers} layers x {n:,} tokens x d={d} = {n_layers * n:,} points"
    )
    x, lab = synthetic(n_layers, n, d)
    flat = x.reshape(-1, d)
    layers = list(range(n_layers))
    print(f"PCA agreement with sklearn (max rel. diff): {check_pca(x):.1e}")

    pts = f"{n_layers * n // 1000}k points"
    med = interleaved(
        {
            f"ours pca ({n_layers} layers, one space, {pts})": lambda: project(x, layers, "pca"),
            "sklearn PCA(2).fit_transform (same matrix)": lambda: PCA(2).fit_transform(flat),
            "ours aligned (PCA per layer + Procrustes)": lambda: project(x, layers, "aligned"),
            f"ours pca_fit k=50 on {n:,} points (UMAP's pre-reduction)": lambda: pca_fit(
                flat[:n], 50
            ),
        },
        repeat,
    )
    proj = project(x, layers, "pca")
    meta = pd.DataFrame(
        {
            "text": "the kings that the teacher helps",
            "label": lab.astype(str),
            "group": "g",
            "pos": np.arange(n) % 12,
            "token": "w",
        }
    )
    med[f"figure build + to_json ({pts}, {n_layers} frames)"] = timed(
        lambda: trajectory_figure(proj, meta, "label").to_json(), repeat
    )[0]
    ref = med["sklearn PCA(2).fit_transform (same matrix)"]

    t = time.perf_counter()
    warm_umap()
    warm = time.perf_counter() - t
    one = x[-1:]  # 10k points of the last layer
    u_rep = max(1, repeat // 2)
    med[f"ours umap {n:,} points (after warm-up)"] = timed(
        lambda: project(one, [0], "umap"), u_rep
    )[0]

    def umap_defaults():
        import umap

        pre = pca_fit(one[0], 50)[0].astype(np.float32)
        umap.UMAP(random_state=0).fit_transform(pre)

    med[f"umap-learn defaults, {n:,} points (same PCA-50 input)"] = timed(umap_defaults, u_rep)[0]
    with Store(":memory:") as s:
        p = project(one, [0], "umap")
        req = TV.Request(model_id="m", set_name="s", layers=(0,), method="umap", standardize=False)
        m = pd.DataFrame({"run_id": np.arange(n).astype(str), "pos": -1})
        s.cache_put(TV.CACHE_KIND, TV.cache_key(req, m), TV._dump(p))
        med[f"store cache hit ({n:,}-point UMAP result)"] = timed(
            lambda: TV.cached(s, req, m), repeat
        )[0]

    print(f"umap-learn import + numba warm-up (once, in the background at app start): {warm:.1f} s")
    print("| what | median | vs sklearn PCA |\n| --- | --- | --- |")
    for k, v in med.items():
        print(f"| {k} | {v * 1000:,.0f} ms | {v / ref:.2f}× |")
    if a.page:
        for k, v in page_rerun(repeat).items():
            print(f"| page, demo agreement: {k} | {v * 1000:,.0f} ms | |")


if __name__ == "__main__":
    main()
