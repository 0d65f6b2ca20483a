"""`probe`: per-layer linear probes with controls (the Probes view's numbers)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from backend.commands._common import add_model_args, ensure_runs, int_in
from backend.errors import LayerScopeError
from backend.views import probes, units

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
        default="auto",
        choices=["auto", *probes.POOLS],
        help="how a prompt unit pools its tokens (auto: mean for encoder models, whose last "
        "token is a separator; last for causal models)",
    )
    p.add_argument("--folds", type=int_in(2, 100), default=5)
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


def request_from(args, store, model_id: str, baseline_id: str | None) -> probes.Request:
    model = store.get_model(model_id)
    layers = units.parse_layers(args.layers, model["n_layers"])
    return probes.Request(
        model_id=model_id,
        set_name=args.set_name,
        unit=args.unit,
        pool=probes.default_pool(model) if args.pool == "auto" else args.pool,
        folds=args.folds,
        method=args.method,
        layers=tuple(layers) if args.layers else None,  # None: every layer, as the page
        baseline_model_id=baseline_id,
        baseline_name=args.baseline_model,
    )


def run(args, store) -> dict:
    if args.label != "label":
        raise LayerScopeError(
            "Only the set's 'label' column can be probed (per-token labels: --unit token)."
        )
    model_id, _ = ensure_runs(store, args)
    baseline = probes.TWINS.get(args.model) if args.baseline == "auto" else args.baseline
    args.baseline_model = baseline if baseline and baseline != "none" else None
    baseline_id = None
    if args.baseline_model:
        baseline_id, _ = ensure_runs(
            store, argparse.Namespace(**{**vars(args), "model": args.baseline_model})
        )
    req = request_from(args, store, model_id, baseline_id)
    res = probes.compute(store, req)
    out = {"model": args.model, "set": args.set_name, **res.to_dict()}
    if req.unit == "prompt":
        out["pool_label"] = probes.pool_label(req.pool, store.get_model(model_id))
    if args.weights:
        out["weights_file"] = save_weights(args.weights, res)
    return out


def save_weights(path: str, res: probes.Result) -> str:
    """Write the probe weights (.npz: weights, bias, layers, classes); returns the file written."""
    r = res.probe
    target = Path(path)
    if target.suffix != ".npz":  # np.savez would append .npz: say which file is written
        target = target.with_suffix(".npz")
    if target.is_dir() or not target.parent.is_dir():
        raise LayerScopeError(
            f"Cannot save the weights to {target}: "
            + (
                "it is a folder."
                if target.is_dir()
                else f"the folder {target.parent} does not exist."
            )
        )
    np.savez(
        target,
        weights=r.weights,
        bias=r.bias,
        layers=np.array(r.layers),
        classes=np.array(r.classes),
    )
    return str(target)


def prose(r: dict) -> str:
    b = r.get("baseline")
    task = r.get("control_task")
    pooled = f"; pooled: {r['pool_label']}" if r.get("pool_label") else ""
    lines = [
        (
            f"{r['model']} on {r['set']}: {r['n_units']} {r['unit']} units from "
            f"{r['n_prompts']} prompts, classes {', '.join(r['classes'])}; majority baseline "
            f"{r['majority']:.3f}; {r['folds']}-fold CV split by prompt; {r['method']} probe"
            f"{pooled}"
        ),
        f"95% interval: {r['interval_method']}",
        "layer  accuracy  95% interval      shuffled  selectivity"
        + ("  control task  selectivity vs task" if task else "")
        + "  macro-F1"
        + (f"  {b['model']}" if b else ""),
    ]
    for i, layer in enumerate(r["layers"]):
        lines.append(
            f"{layer:>5}  {r['accuracy'][i]:.3f}     [{r['ci_low'][i]:.3f}, "
            f"{r['ci_high'][i]:.3f}]   {r['control'][i]:.3f}     "
            f"{r['selectivity'][i]:+.3f}      "
            + (
                f"{task[i]:.3f}         {r['control_selectivity'][i]:+.3f}               "
                if task
                else ""
            )
            + f"{r['macro_f1'][i]:.3f}"
            + (f"     {b['accuracy'][i]:.3f}" if b else "")
        )
    if task:
        i = r["layers"].index(r["best_layer"])
        lines.append(
            f"control task (Hewitt & Liang: each token type gets a random label): selectivity "
            f"at the best layer {r['control_selectivity'][i]:+.3f} (accuracy {r['accuracy'][i]:.3f}"
            f" - control task {task[i]:.3f}); the shuffled control is about the majority rate"
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
