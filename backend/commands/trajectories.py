"""`project`: trajectory coordinates (the Trajectories view's numbers, same cache)."""

from __future__ import annotations

import numpy as np

from backend.analysis.projection import METHODS, silhouette_per_layer
from backend.commands._common import add_model_args, ensure_runs
from backend.views import units
from backend.views.trajectories import Request, compute, load_units

HELP = "project units across layers (pca | umap | aligned | aligned-umap); print coordinates"


def register(p) -> None:
    add_model_args(p)
    p.add_argument("--method", default="pca", choices=METHODS)
    p.add_argument("--unit", default="prompt", choices=["prompt", "token"])
    p.add_argument("--pool", default="last", choices=["last", "mean"], help="prompt units")
    p.add_argument("--layers", help="a:b (inclusive) or a,b,c; default all")
    p.add_argument("--dims", type=int, default=2, choices=[2, 3])
    p.add_argument("--standardize", action="store_true", help="standardise each layer first")
    p.add_argument("--max-runs", type=int, default=20, help="token units: the first N prompts")
    p.add_argument("--sample", type=int, help="keep N units (seeded random sample)")
    p.add_argument("--seed", type=int, default=0)


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


def unit_ids(meta) -> list[str]:
    """run id for prompt units, run id:position for token units."""
    return [r if p < 0 else f"{r}:{p}" for r, p in zip(meta["run_id"], meta["pos"])]


def run(args, store) -> dict:
    model_id, _ = ensure_runs(store, args)
    proj, meta = compute(store, request(args, store, model_id))
    ids, axes = unit_ids(meta), "xyz"[: proj.dims]
    points = [
        {"unit": ids[u], "layer": layer, **{a: float(v) for a, v in zip(axes, proj.coords[li, u])}}
        for li, layer in enumerate(proj.layers)
        for u in range(proj.n_units)
    ]
    ev = proj.explained_variance
    lab = meta["label"].fillna("").astype(str).to_numpy()
    sil = None
    if len(set(lab)) > 1:  # separation of the labels in the model's own space, per layer
        x, xmeta, _ = load_units(store, request(args, store, model_id))
        sil = silhouette_per_layer(x, xmeta["label"].fillna("").astype(str).to_numpy())
    units_table = meta.assign(unit=ids)[
        ["unit", "run_id", "pos", "token", "label", "group", "text"]
    ]
    return {
        "method": proj.method,
        "description": proj.description,
        "unit": args.unit,
        "layers": list(proj.layers),
        "n_units": proj.n_units,
        "n_points": proj.n_points,
        "explained_variance": None if ev is None else np.round(ev, 6).tolist(),
        "silhouette": None if sil is None else np.round(sil, 4).tolist(),
        "points": points,
        "units": units_table.astype(object).where(units_table.notna(), None).to_dict("records"),
    }


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
