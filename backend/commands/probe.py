"""`probe`: per-layer linear probes with controls (the Probes view's numbers)."""

from __future__ import annotations

from backend import readouts
from backend.commands._common import add_model_args, ensure_runs

HELP = "per-layer linear probe: accuracy, 95% interval, shuffled control, selectivity"


def register(p) -> None:
    add_model_args(p)
    p.add_argument("--label", default="label", help="label column (only 'label' is stored)")
    p.add_argument("--unit", default="prompt", choices=["prompt", "token"])
    p.add_argument("--pool", default="last", choices=["last", "mean"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--method", default="logistic", choices=["logistic", "ridge"])


def run(args, store) -> dict:
    model_id, _ = ensure_runs(store, args)
    res, _ = readouts.probe(store, args.set_name, model_id, args.unit, args.pool, args.folds,
                            args.method)
    return {"layers": list(res.layers), "classes": list(res.classes),
            "accuracy": res.accuracy.round(4).tolist(), "ci_low": res.ci_low.round(4).tolist(),
            "ci_high": res.ci_high.round(4).tolist(), "macro_f1": res.macro_f1.round(4).tolist(),
            "control": res.control.round(4).tolist(),
            "selectivity": res.selectivity.round(4).tolist(), "majority": res.majority,
            "best_layer": res.best_layer(), "folds": res.folds}


def prose(r: dict) -> str:
    lines = [f"classes {r['classes']}, majority baseline {r['majority']:.3f}, {r['folds']} folds",
             "layer  accuracy  95% interval     control  selectivity  macro-F1"]
    for i, layer in enumerate(r["layers"]):
        lines.append(f"{layer:>5}  {r['accuracy'][i]:.3f}     [{r['ci_low'][i]:.3f}, "
                     f"{r['ci_high'][i]:.3f}]  {r['control'][i]:.3f}    "
                     f"{r['selectivity'][i]:+.3f}       {r['macro_f1'][i]:.3f}")
    return "\n".join(lines)
