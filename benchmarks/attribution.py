"""Attribution patching vs exact patching, and direct logit attribution's cost.

1. Speed: the 13 × 20 residual grid of a GPT-2-small-config model (random weights, seed 0,
   ``_common.make_gpt2_small``), a clean and a corrupted prompt of 20 tokens differing at one
   position, in the same run: exact (``patch_cells`` as the view runs it: clean and corrupted
   plain passes, then the batched patched passes) vs AtP (as the view runs it: the clean plain
   pass, then ``atp_cells``: the corrupted forward kept differentiable and one backward). Median of ``--repeat``; issue
   27's target: AtP ≤ 0.15 × exact. Also the time of ``views.attribution.compute`` (direct
   logit attribution + the graph) on the same prompt.
2. Agreement: on the demo's agreement minimal pairs aligned with "the teacher above the boys
   always" / "the teachers above the boy always" (``--pairs``, each pair's own top-1 answers),
   Spearman's rank correlation between the AtP and exact recovery grids, per pair and on the
   mean grid, for resid / attn / mlp (issue 27's target: ≥ 0.8).

Run: ``python benchmarks/attribution.py [--repeat 3]``; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from benchmarks._common import make_gpt2_small, timed

CLEAN, CORRUPTED = "the teacher above the boys always", "the teachers above the boy always"


def speed(repeat: int, n: int = 20) -> dict:
    from backend import models
    from backend.capture import patching as P
    from backend.views import attribution

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gpt2-small-random"
        make_gpt2_small(path)
        lm = models.load_model(str(path))
        clean = [100 + i for i in range(n)]
        corrupted = list(clean)
        corrupted[n // 3] = 7
        cells = [(layer, p) for layer in range(lm.info.n_layers + 1) for p in range(n)]

        def exact():
            states, _, _ = P.run_plain(lm, clean)
            corr, outs, last = P.run_plain(lm, corrupted)
            return P.patch_cells(lm, corrupted, states, cells, 11, 12, corrupted_outputs=outs,
                                 corrupted_values=corr, corrupted_logits=last).metric  # fmt: skip

        def atp():
            states, _, _ = P.run_plain(lm, clean)  # as the view runs it
            return P.atp_cells(lm, corrupted, states, cells, 11, 12)

        def one_forward():
            return P.run_plain(lm, corrupted)

        exact(), atp()  # warm-up
        t_exact, m_exact = timed(exact, repeat)
        t_atp, m_atp = timed(atp, repeat)
        t_fwd, _ = timed(one_forward, repeat)
        prompt = " ".join(f"w{i}" for i in clean)
        req = attribution.Request(model=str(path), prompt=prompt, answer="w11", against="w12")
        attribution.compute(None, req)  # loads its eager instance
        t_attr, res = timed(lambda: attribution.compute(None, req), repeat)
        from scipy.stats import spearmanr

        return {
            "cells": len(cells),
            "tokens": n,
            "torch_threads": torch.get_num_threads(),
            "exact_s": round(t_exact, 3),
            "atp_s": round(t_atp, 3),
            "atp_over_exact": round(t_atp / t_exact, 3),
            "one_forward_s": round(t_fwd, 3),
            "spearman_random_weights": round(float(spearmanr(m_exact, m_atp).statistic), 3),
            "attribution_compute_s": round(t_attr, 3),
            "attribution_sum_error": float(abs(res.total - res.logit_diff)),
        }


def agreement() -> dict:
    from scipy.stats import spearmanr

    from backend import models
    from backend.store import Store
    from backend.views import patching as V

    lm = models.get_model("demo")
    out = {}
    with Store(":memory:") as s:
        for comp in ("resid", "attn", "mlp"):
            res = {}
            for m in ("exact", "atp"):
                req = V.Request(model="demo", clean=CLEAN, corrupted=CORRUPTED, component=comp, method=m,
                                set_name="agreement", pairs=True)  # fmt: skip
                res[m] = V.compute(s, req, lm=lm)
            ex, at = res["exact"].pair_recovery, res["atp"].pair_recovery
            per = [float(spearmanr(a.ravel(), b.ravel()).statistic) for a, b in zip(ex, at)]
            later = [float(spearmanr(a[:, 2:].ravel(), b[:, 2:].ravel()).statistic)
                     for a, b in zip(ex, at)]  # fmt: skip
            out[comp] = {
                "pairs": len(per),
                "spearman_per_pair_median": round(float(np.median(per)), 3),
                "spearman_per_pair_min": round(float(np.min(per)), 3),
                "spearman_mean_grid": round(float(spearmanr(ex.mean(0).ravel(),
                                                            at.mean(0).ravel()).statistic), 3),
                "spearman_from_first_difference_median": round(float(np.median(later)), 3),
                "typed_pair": round(per[0], 3),
            }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)
    out = {"agreement": agreement()}
    if not args.skip_speed:
        out["speed"] = speed(args.repeat)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
