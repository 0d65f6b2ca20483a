"""`similarity`: the Similarity view's matrices."""

from __future__ import annotations

import numpy as np

from backend import catalog, similarity_views
from backend.commands._common import add_model_args, ensure_runs

HELP = "similarity matrices: layer-cka | layer-cka-debiased | layer-cosine | prompt | token | model-cka"


def register(p) -> None:
    add_model_args(p)
    p.add_argument("--kind", default="layer-cka", choices=similarity_views.KINDS)
    p.add_argument("--layer", type=int)
    p.add_argument("--other-model")
    p.add_argument("--pool", default="last", choices=["last", "mean"])
    p.add_argument("--order", default="cluster", choices=["cluster", "label"])


def run(args, store) -> dict:
    model_id, _ = ensure_runs(store, args)
    other_id = None
    if args.other_model:
        other_args = type(args)(**{**vars(args), "model": args.other_model})
        other_id, _ = ensure_runs(store, other_args)
    m, _ = similarity_views.compute(store, args.kind, model_id, args.set_name, args.layer,
                                    other_id, args.pool, order=args.order)
    return {"kind": m.kind, "rows": list(m.rows), "cols": list(m.cols),
            "matrix": np.round(m.values, 5).tolist(),
            "order": list(m.order) if m.order else None, "range": [m.vmin, m.vmax]}


def prose(r: dict) -> str:
    lines = [f"{r['kind']} ({len(r['rows'])} x {len(r['cols'])})"]
    if len(r["cols"]) <= 30:
        lines.append("\t" + "\t".join(str(c)[:8] for c in r["cols"]))
        for name, row in zip(r["rows"][:30], r["matrix"][:30]):
            lines.append(str(name)[:12] + "\t" + "\t".join(f"{v:.3f}" for v in row))
    else:
        lines.append("(large matrix: use --json)")
    return "\n".join(lines)
