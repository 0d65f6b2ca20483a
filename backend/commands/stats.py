"""`stats`: layer statistics of a set."""

from __future__ import annotations

from backend.commands._common import add_model_args, ensure_runs
from backend.views import readouts

HELP = "layer statistics: norms, massive activations, effective rank, anisotropy"


def register(p) -> None:
    add_model_args(p)
    p.add_argument("--max-runs", type=int, default=200, help="use the first N prompts")


def run(args, store) -> dict:
    model_id, _ = ensure_runs(store, args)
    st, meta = readouts.stats(store, args.set_name, model_id, args.max_runs)
    names = meta["name"].tolist()
    return {
        "model": args.model,
        "set": args.set_name,
        "n_tokens": len(names),
        "layers": list(st.layers),
        "norm_quantiles": {
            "q": [0.05, 0.25, 0.5, 0.75, 0.95],
            "values": st.norm_quantiles.round(4).tolist(),
        },
        "norm_median": st.norm_quantiles[:, 2].round(4).tolist(),
        "max_abs": st.max_abs.round(4).tolist(),
        "median_abs": st.median_abs.round(5).tolist(),
        "massive_ratio": st.massive_ratio.round(2).tolist(),
        "massive_dim": st.massive_dim.tolist(),
        "massive_token": [names[u] for u in st.massive_unit],
        "massive_top": [
            [
                {"value": round(float(v), 4), "dim": int(d), "token": names[u]}
                for v, d, u in zip(vs, ds, us)
            ]
            for vs, ds, us in zip(st.top_values, st.top_dims, st.top_units)
        ],
        "effective_rank": st.effective_rank.round(3).tolist(),
        "anisotropy": st.anisotropy.round(4).tolist(),
    }


def prose(r: dict) -> str:
    lines = [
        f"{r['model']} on {r['set']}: {r['n_tokens']} tokens",
        "layer  median‖h‖  max|v|/median  (dim, token)                eff.rank  anisotropy",
    ]
    for i, layer in enumerate(r["layers"]):
        lines.append(
            f"{layer:>5}  {r['norm_median'][i]:9.2f}  {r['massive_ratio'][i]:13.1f}  "
            f"({r['massive_dim'][i]:>4}, {r['massive_token'][i][:20]:<20})  "
            f"{r['effective_rank'][i]:8.2f}  {r['anisotropy'][i]:10.3f}"
        )
    return "\n".join(lines)
