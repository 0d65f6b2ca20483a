"""`project`: trajectory coordinates (the Trajectories view's numbers)."""

from __future__ import annotations

from backend import units
from backend.analysis.projection import project
from backend.commands._common import add_model_args, ensure_runs

HELP = "project units across layers (pca | umap | aligned) and print the coordinates"


def register(p) -> None:
    add_model_args(p)
    p.add_argument("--method", default="pca", choices=["pca", "umap", "aligned"])
    p.add_argument("--unit", default="prompt", choices=["prompt", "token"])
    p.add_argument("--pool", default="last", choices=["last", "mean"])
    p.add_argument("--layers", help="a:b (inclusive) or a,b,c; default all")
    p.add_argument("--dims", type=int, default=2, choices=[2, 3])
    p.add_argument("--standardize", action="store_true")
    p.add_argument("--max-runs", type=int, default=20, help="token units: first N runs")
    p.add_argument("--seed", type=int, default=0)


def compute(store, model_id, runs, args):
    info = store.get_model(model_id)
    layers = units.parse_layers(args.layers, info["n_layers"])
    if args.unit == "prompt":
        x, meta = units.prompt_units(store, runs, layers, args.pool)
    else:
        x, meta = units.token_units(store, runs.head(args.max_runs), layers)
    return project(x, layers, args.method, args.dims, args.standardize, args.seed), meta, x


def run(args, store) -> dict:
    from backend.errors import LayerScopeError

    model_id, runs = ensure_runs(store, args)
    try:
        proj, meta, _ = compute(store, model_id, runs, args)
    except ValueError as e:
        raise LayerScopeError(str(e)) from None
    axes = ["x", "y", "z"][: args.dims]
    points = []
    for li, layer in enumerate(proj.layers):
        for u in range(proj.coords.shape[1]):
            row = {"unit": f"{meta['run_id'][u]}:{meta['pos'][u]}", "layer": layer}
            row.update({a: float(v) for a, v in zip(axes, proj.coords[li, u])})
            points.append(row)
    ev = proj.explained_variance
    return {"method": proj.method, "unit": args.unit, "layers": list(proj.layers),
            "n_units": int(proj.coords.shape[1]), "points": points,
            "explained_variance": None if ev is None else ev.tolist(),
            "units": meta[["run_id", "pos", "token", "label"]].to_dict("records")}


def prose(r: dict) -> str:
    ev = r["explained_variance"]
    head = (f"{r['method']}: {r['n_units']} {r['unit']} units x {len(r['layers'])} layers"
            + (f"; explained variance {[round(v, 3) for v in ev]}" if ev and not
               isinstance(ev[0], list) else ""))
    lines = [head, "unit\tlayer\tx\ty" + ("\tz" if "z" in r["points"][0] else "")]
    for p in r["points"][:20]:
        lines.append("\t".join(str(round(v, 4)) if isinstance(v, float) else str(v)
                               for v in p.values()))
    if len(r["points"]) > 20:
        lines.append(f"... {len(r['points']) - 20} more (use --json for all)")
    return "\n".join(lines)
