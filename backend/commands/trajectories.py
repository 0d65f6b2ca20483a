"""`project`: trajectory coordinates (the Trajectories view's numbers, same cache)."""

from __future__ import annotations

import argparse

from backend.analysis.projection import METHODS
from backend.commands._common import COUNT, SEED, add_model_args, ensure_runs
from backend.views import units
from backend.views.trajectories import Request, compute

HELP = "project units across layers (pca | umap | aligned | aligned-umap); print coordinates"


def register(p) -> None:
    add_model_args(p)
    p.add_argument("--method", default="pca", choices=METHODS)
    p.add_argument("--unit", default="prompt", choices=["prompt", "token"])
    p.add_argument("--pool", default="last", choices=["last", "mean"], help="prompt units")
    p.add_argument("--layers", help="a:b (inclusive) or a,b,c; default all")
    p.add_argument("--dims", type=int, default=2, choices=[2, 3])
    p.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="standardise each layer first (default, as the page: norms grow with depth)",
    )
    p.add_argument("--max-runs", type=COUNT, default=20, help="token units: the first N prompts")
    p.add_argument("--sample", type=COUNT, help="keep N units (seeded random sample)")
    p.add_argument("--seed", type=SEED, default=0)


def request(args, store, model_id: str) -> Request:
    n_layers = store.get_model(model_id)["n_layers"]
    return Request(
        model_id=model_id,
        set_name=args.set_name,
        layers=tuple(units.parse_layers(args.layers, n_layers)),
        method=args.method,
        unit=args.unit,
        pool=args.pool,
        dims=args.dims,
        standardize=args.standardize,
        max_runs=args.max_runs,
        sample=args.sample,
        seed=args.seed,
    )


def run(args, store) -> dict:
    model_id, _ = ensure_runs(store, args)
    return compute(store, request(args, store, model_id)).to_dict()


def prose(r: dict) -> str:
    ev = r["explained_variance"]
    lines = [
        (
            f"{r['method']}: {r['n_units']} {r['unit']} units x {len(r['layers'])} layers = "
            f"{r['n_points']} points"
        ),
        r["description"],
    ]
    if ev is not None:
        per = (
            ev if not isinstance(ev[0], list) else [f"L{li}: {v}" for li, v in zip(r["layers"], ev)]
        )
        lines.append(f"explained variance ratio: {per}")
    if r.get("silhouette") is not None:
        lines.append(
            "silhouette of the labels per layer (model space): "
            + " ".join(f"L{li}: {v:.2f}" for li, v in zip(r["layers"], r["silhouette"]))
        )
    axes = [a for a in "xyz" if a in r["points"][0]]
    lines.append("\t".join(["unit", "layer", *axes]))
    for p in r["points"][:20]:
        lines.append("\t".join([p["unit"], str(p["layer"]), *(f"{p[a]:.4f}" for a in axes)]))
    if len(r["points"]) > 20:
        lines.append(f"... {len(r['points']) - 20} more (use --json for all)")
    return "\n".join(lines)
