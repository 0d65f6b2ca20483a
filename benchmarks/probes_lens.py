"""Probe and logit-lens speed against their obvious peers, measured in the same run.

    python benchmarks/probes_lens.py [--repeat 3] [--units 5000] [--d 768] [--ref-layers 13]

Probes: 13 layers x 5 folds x 5,000 token units (500 prompts of 10 tokens, grouped folds),
GPT-2-small width, a planted binary signal that grows with depth. Ours computes per layer the
5 folds, the 5 shuffled-label control folds and the final fit on all units; the peers
(scikit-learn ``cross_val_score`` on the same grouped folds) compute only the 5 folds.
Lens: GPT-2-small shape (random weights from its config), 128 positions x 13 layers; the peer
is the straightforward readout (whole logits tensor, softmax, top-k, KL, entropy, rank).
Prints medians and ratios; targets from issue 7: probes <= 3 s, lens <= 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import timed

from backend.analysis.lens import logit_lens
from backend.analysis.probes import grouped_folds, run_probes


def probe_data(n_layers: int, n_units: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_units // 10), 10)
    y = rng.integers(0, 2, n_units // 10)[groups]
    x = rng.normal(size=(n_layers, n_units, d)).astype(np.float32)
    x[:, :, :8] += (y[None, :, None] - 0.5) * np.linspace(0, 1.2, n_layers)[:, None, None]
    return x, y, groups


def bench_probes(args) -> list[tuple[str, float]]:
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, g = probe_data(13, args.units, args.d)
    splits = grouped_folds(y, g, 5, 0)
    rows = []
    for method in ("logistic", "ridge"):
        t, res = timed(lambda m=method: run_probes(x, y, g, folds=5, method=m), args.repeat)
        rows.append((f"ours {method} (5 folds + 5 control folds + final fit, 13 layers)", t))
        print(
            f"  ours {method}: {t:.2f} s, accuracy by layer {np.round(res.accuracy, 2)}", flush=True
        )
        if method == "logistic":
            ours_logistic = res
    n_ref = min(args.ref_layers, 13)
    peers = {
        "sklearn LogisticRegression() default": lambda: LogisticRegression(),
        "sklearn StandardScaler + LogisticRegression(C=0.1) (= ours)": lambda: make_pipeline(
            StandardScaler(), LogisticRegression(C=0.1)
        ),
        "sklearn StandardScaler + RidgeClassifier(alpha=10) (= ours)": lambda: make_pipeline(
            StandardScaler(), RidgeClassifier(alpha=10.0)
        ),
    }
    for name, make in peers.items():
        accs = []

        def run(make=make, accs=accs):
            accs.clear()
            for layer in range(n_ref):
                accs.append(cross_val_score(make(), x[layer], y, cv=splits).mean())

        t, _ = timed(run, 1)
        t_all = t * 13 / n_ref
        rows.append(
            (
                f"{name}, cross_val_score, 13 layers"
                + (f" (measured on {n_ref}, scaled)" if n_ref < 13 else ""),
                t_all,
            )
        )
        if "(= ours)" in name and "Logistic" in name:
            diff = np.abs(np.array(accs) - ours_logistic.accuracy[:n_ref]).max()
            print(f"  max |accuracy difference| ours vs {name}: {diff:.4f}")
        print(f"  {name}: {t_all:.2f} s", flush=True)
    return rows


def naive_lens(hidden: torch.Tensor, norm, unembed, k: int = 5):
    """The obvious readout: every layer's full logits at once, then the statistics."""
    with torch.inference_mode():
        logits = unembed(norm(hidden)).float()
        logp = torch.log_softmax(logits, -1)
        p = logp.exp()
        ent = -(p * logp).sum(-1)
        kl = (p[-1] * (logp[-1] - logp)).sum(-1)
        top = p.topk(k, -1)
        target = logits.gather(-1, logits[-1].argmax(-1).expand(logits.shape[0], -1)[..., None])
        rank = (logits > target).sum(-1)
    return top, kl, ent, rank


def bench_lens(args) -> list[tuple[str, float]]:
    import transformers as tf

    torch.manual_seed(0)
    model = tf.GPT2LMHeadModel(tf.GPT2Config()).eval()  # GPT-2 small shape, random weights
    assert model.lm_head.weight.shape == (50257, 768)
    ids = torch.randint(0, 50257, (1, 128))
    # layer 0 = embeddings, L = output of block L (HF's last hidden_states entry has ln_f
    # applied, so the last block's output is taken with a hook)
    last = []
    hook = model.transformer.h[-1].register_forward_hook(
        lambda m, a, o: last.append(o[0] if isinstance(o, tuple) else o)
    )
    with torch.inference_mode():
        out = model(input_ids=ids, output_hidden_states=True)
    hook.remove()
    hidden = torch.cat([torch.stack(out.hidden_states[:-1])[:, 0], last[0]])  # (13, 128, 768)
    hidden_np = hidden.numpy()
    norm, unembed = model.transformer.ln_f, model.lm_head
    rows = []
    t, res = timed(lambda: logit_lens(hidden_np, norm, unembed), args.repeat)
    rows.append(("ours logit_lens, fp32 (13 layers x 128 positions, vocab 50,257)", t))
    np.testing.assert_allclose(res.kl_to_final[-1], 0, atol=1e-4)
    t_naive, _ = timed(lambda: naive_lens(hidden, norm, unembed), args.repeat)
    rows.append(("naive full-tensor readout, fp32", t_naive))
    with torch.inference_mode():
        t_fwd, _ = timed(lambda: model(input_ids=ids), args.repeat)
    rows.append(("one GPT-2-small forward pass of the 128 tokens (for scale)", t_fwd))
    norm_bf, unembed_bf = (m.to(torch.bfloat16) for m in (norm, unembed))
    t_bf, _ = timed(lambda: logit_lens(hidden_np, norm_bf, unembed_bf), args.repeat)
    rows.append(("ours logit_lens, bf16 model (dtype auto on this CPU)", t_bf))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--units", type=int, default=5000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument(
        "--ref-layers", type=int, default=13, help="layers the sklearn peers run on (scaled to 13)"
    )
    args = ap.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    print("probes:", flush=True)
    p = bench_probes(args)
    print("lens:", flush=True)
    lens = bench_lens(args)
    print(f"load average {os.getloadavg()[0]:.1f} at end\n")
    for title, rows, ref in (("Probes", p, p[0][1]), ("Lens", lens, lens[0][1])):
        print(f"| {title} | median | vs ours |\n| --- | --- | --- |")
        for name, t in rows:
            print(f"| {name} | {t:.3f} s | {t / ref:.1f}x |")
        print()


if __name__ == "__main__":
    main()
