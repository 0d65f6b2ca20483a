"""`stats`: layer statistics of a set."""

from __future__ import annotations

from backend import readouts
from backend.commands._common import add_model_args, ensure_runs

HELP = "layer statistics: norms, massive activations, effective rank, anisotropy"


def register(p) -> None:
    add_model_args(p)
    p.add_argument("--max-runs", type=int, default=200)


def run(args, store) -> dict:
    model_id, _ = ensure_runs(store, args)
    st, names = readouts.stats(store, args.set_name, model_id, args.max_runs)
    return {"layers": list(st.layers), "norm_median": st.norm_quantiles[:, 2].round(4).tolist(),
            "max_abs": st.max_abs.round(4).tolist(), "median_abs": st.median_abs.round(5).tolist(),
            "massive_ratio": st.massive_ratio.round(2).tolist(),
            "massive_dim": st.massive_dim.tolist(),
            "massive_token": [names[u] for u in st.massive_unit],
            "effective_rank": st.effective_rank.round(3).tolist(),
            "anisotropy": st.anisotropy.round(4).tolist()}


def prose(r: dict) -> str:
    lines = ["layer  median‖h‖  max|v|/median  (dim, token)            eff.rank  anisotropy"]
    for i, layer in enumerate(r["layers"]):
        lines.append(f"{layer:>5}  {r['norm_median'][i]:9.2f}  {r['massive_ratio'][i]:13.1f}  "
                     f"({r['massive_dim'][i]}, {r['massive_token'][i][:18]:<18})  "
                     f"{r['effective_rank'][i]:8.2f}  {r['anisotropy'][i]:10.3f}")
    return "\n".join(lines)
