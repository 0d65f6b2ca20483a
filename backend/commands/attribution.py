"""`attribution`: who wrote this answer — the next-token logit (difference) split exactly into
the embeddings', each layer's attention and MLP outputs', each head's and the bias terms'
contributions, and the token × layer contribution graph."""

from __future__ import annotations

from backend.commands._common import add_model_args
from backend.views import attribution

HELP = "direct logit attribution of one prompt's next token: per layer, per head, and a graph"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompt", required=True, help="the text to read")
    p.add_argument("--answer", help="the token whose logit is explained (default: the top-1)")
    p.add_argument("--against", help="subtract this token's logit (default: none)")
    p.add_argument(
        "--position", type=int, help="the position whose next token is read (default: last)"
    )
    p.add_argument(
        "--threshold", type=float, default=0.04, help="graph edges below this share are pruned"
    )


def run(args, store) -> dict:
    req = attribution.Request(
        model=args.model or "demo",
        prompt=args.prompt,
        answer=args.answer,
        against=args.against,
        position=args.position,
        threshold=args.threshold,
        dtype=args.dtype,
        device=args.device,
    )
    return {"model": req.model, **attribution.compute(store, req).to_dict()}


def prose(r: dict) -> str:
    t = r["target"]
    what = f"logit({t['answer']!r})" + (f" - logit({t['against']!r})" if t["against"] else "")
    lines = [
        f"{what} after {r['tokens'][r['position']]!r} (position {r['position']}): "
        f"{t['logit_diff']:.4f}; the components sum to {r['sum']:.4f} "
        f"(error {r['sum_error']:.1e})",
        f"{'layer':>5} {'attn':>9} {'mlp':>9}",
    ]
    by = {(c["layer"], c["kind"]): c["value"] for c in r["components"]}
    lines.append(f"{0:>5} {'embed':>9} {by[(0, 'embed')]:>9.4f}")
    for layer in sorted({c["layer"] for c in r["components"] if c["kind"] == "attn"}):
        lines.append(f"{layer:>5} {by[(layer, 'attn')]:>9.4f} {by[(layer, 'mlp')]:>9.4f}")
    for c in r["components"]:
        if c["kind"] == "bias":
            lines.append(f"{c['name']}: {c['value']:.4f}")
    top = sorted(r["heads"], key=lambda h: -abs(h["value"]))[:5]
    lines.append("largest heads: " + ", ".join(
        f"L{h['layer']}H{h['head']} {h['value']:+.3f}" for h in top))  # fmt: skip
    g = r["graph"]
    on = [e for e in g["edges"] if e["route"]]
    lines.append(f"graph: {len(g['edges'])} edges >= {g['threshold']}, {len(on)} on the route")
    return "\n".join(lines)
