"""`stats`: layer statistics of a set."""

from __future__ import annotations

from backend.commands._common import COUNT, add_model_args, ensure_runs
from backend.views import stats

HELP = "layer statistics: norms, massive activations, effective rank, anisotropy"


def register(p) -> None:
    add_model_args(p)
    p.add_argument("--max-runs", type=COUNT, default=200, help="use the first N prompts")


def run(args, store) -> dict:
    model_id, _ = ensure_runs(store, args)
    res = stats.compute(
        store, stats.Request(model_id=model_id, set_name=args.set_name, max_runs=args.max_runs)
    )
    return {"model": args.model, "set": args.set_name, **res.to_dict()}


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
