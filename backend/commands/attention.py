"""`attention`: every layer × head attention pattern of one prompt, sink share, entropy."""

from __future__ import annotations

from backend.commands._common import add_model_args
from backend.views import attention

HELP = "attention patterns of one prompt: every layer × head, sink share and entropy per head"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompt", required=True, help="the text to read")


def run(args, store) -> dict:
    req = attention.Request(
        model=args.model or "demo", prompt=args.prompt, dtype=args.dtype, device=args.device
    )
    return {"model": req.model, **attention.compute(store, req).to_dict()}


def prose(r: dict) -> str:
    lines = [f"{len(r['tokens'])} tokens; sink share (mass on the first token) per head:"]
    for layer, row, ent in zip(r["layers"], r["sink_share"], r["entropy"]):
        cells = "  ".join(f"{v:.2f}/{e:.2f}" for v, e in zip(row, ent))
        lines.append(f"layer {layer:>2}: {cells}   (sink/entropy)")
    if r.get("note"):
        lines.append(f"note: {r['note']}")
    return "\n".join(lines)
