"""`probe`: per-layer linear probes with controls (the Probes view's numbers)."""

from __future__ import annotations

import argparse

import numpy as np

from backend.analysis.probes import misclassified
from backend.commands._common import add_model_args, ensure_runs
from backend.errors import LayerScopeError
from backend.views import readouts, units

HELP = "per-layer linear probe: accuracy, 95% interval, shuffled control, selectivity"


def register(p) -> None:
    add_model_args(p)
    p.add_argument(
        "--label",
        default="label",
        help="what to predict: 'label' (the set's label column; per-token labels "
        "with --unit token)",
    )
    p.add_argument("--unit", default="prompt", choices=["prompt", "token"])
    p.add_argument(
        "--pool",
        default="last",
        choices=["last", "mean"],
        help="how a prompt unit pools its tokens",
    )
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--method", default="logistic", choices=["logistic", "ridge"])
    p.add_argument("--layers", default=None, help="a:b or a,b,c (default: all)")
    p.add_argument(
        "--baseline",
        default="auto",
        help="model for the same probe as a control: 'auto' = the untrained twin "
        "of a bundled model, 'none', or any model reference",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="PATH.npy",
        help="save the probe weights (layers x rows x d_model) and biases (.npz)",
    )


def _result(res) -> dict:
    return {
        "layers": list(res.layers),
        "accuracy": res.accuracy.round(4).tolist(),
        "ci_low": res.ci_low.round(4).tolist(),
        "ci_high": res.ci_high.round(4).tolist(),
        "macro_f1": res.macro_f1.round(4).tolist(),
        "control": res.control.round(4).tolist(),
        "selectivity": res.selectivity.round(4).tolist(),
        "majority": round(res.majority, 4),
        "best_layer": res.best_layer(),
        "first_decodable": res.first_decodable(),
    }


def run(args, store) -> dict:
    if args.label != "label":
        raise LayerScopeError(
            "Only the set's 'label' column can be probed (per-token labels: --unit token)."
        )
    model_id, _ = ensure_runs(store, args)
    layers = units.parse_layers(args.layers, store.get_model(model_id)["n_layers"])
    res, meta = readouts.probe(
        store, args.set_name, model_id, args.unit, args.pool, args.folds, args.method, layers=layers
    )
    out = {
        "model": args.model,
        "set": args.set_name,
        "unit": args.unit,
        "method": args.method,
        "classes": list(res.classes),
        "folds": res.folds,
        "n_units": len(res.y),
        "n_prompts": int(meta["run_id"].nunique()),
        **_result(res),
    }
    best = res.best_layer()
    wrong = misclassified(res, best)
    out["misclassified_at_best"] = [
        {
            "run_id": meta.at[i, "run_id"],
            "text": meta.at[i, "text"],
            "true": res.classes[res.y[i]],
            "predicted": res.classes[res.pred[res.layers.index(best), i]],
        }
        for i in wrong[:10]
    ]
    baseline = readouts.TWINS.get(args.model) if args.baseline == "auto" else args.baseline
    if baseline and baseline != "none":
        b_args = argparse.Namespace(**{**vars(args), "model": baseline})
        b_id, _ = ensure_runs(store, b_args)
        twin, _ = readouts.probe(
            store, args.set_name, b_id, args.unit, args.pool, args.folds, args.method, layers=layers
        )
        out["baseline"] = {"model": baseline, **_result(twin)}
    if args.weights:
        np.savez(
            args.weights,
            weights=res.weights,
            bias=res.bias,
            layers=np.array(res.layers),
            classes=np.array(res.classes),
        )
        out["weights_file"] = args.weights
    return out


def prose(r: dict) -> str:
    b = r.get("baseline")
    lines = [
        (
            f"{r['model']} on {r['set']}: {r['n_units']} {r['unit']} units from "
            f"{r['n_prompts']} prompts, classes {', '.join(r['classes'])}; majority baseline "
            f"{r['majority']:.3f}; {r['folds']}-fold CV split by prompt; {r['method']} probe"
        ),
        "layer  accuracy  95% interval      control  selectivity  macro-F1"
        + (f"  {b['model']}" if b else ""),
    ]
    for i, layer in enumerate(r["layers"]):
        lines.append(
            f"{layer:>5}  {r['accuracy'][i]:.3f}     [{r['ci_low'][i]:.3f}, "
            f"{r['ci_high'][i]:.3f}]   {r['control'][i]:.3f}    "
            f"{r['selectivity'][i]:+.3f}       {r['macro_f1'][i]:.3f}"
            + (f"     {b['accuracy'][i]:.3f}" if b else "")
        )
    first = r["first_decodable"]
    lines.append(
        f"best layer {r['best_layer']}; decodable (interval above majority and control"
        f") from layer {first}"
        if first is not None
        else "the label is not decodable above both controls at any layer"
    )
    if b:
        gap = max(r["accuracy"]) - max(b["accuracy"])
        lines.append(f"best accuracy {gap:+.3f} over the same probe on {b['model']}")
    if r["misclassified_at_best"]:
        lines.append(
            f"misclassified at layer {r['best_layer']} (first {len(r['misclassified_at_best'])}):"
        )
        lines += [
            f"  {m['true']} -> {m['predicted']}: {m['text']}" for m in r["misclassified_at_best"]
        ]
    if r.get("weights_file"):
        lines.append(f"weights saved to {r['weights_file']}")
    return "\n".join(lines)
