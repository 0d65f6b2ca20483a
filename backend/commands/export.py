"""`export`: a set's activations to Parquet (one row per run, layer, position)."""

from __future__ import annotations

from pathlib import Path

from backend import catalog
from backend.commands._common import human_bytes

HELP = "export a prompt set's activations to Parquet"


def register(p) -> None:
    p.add_argument("--model", default="demo")
    p.add_argument("--set", dest="set_name", required=True)
    p.add_argument("--layer", type=int, help="one layer (default: all)")
    p.add_argument("--out", required=True, help="output .parquet path")


def run(args, store) -> dict:
    model_id = catalog.model_id_for(store, args.model)
    rows = store.export_parquet(args.set_name, model_id, args.out, layer=args.layer)
    return {
        "out": args.out,
        "rows": rows,
        "bytes": Path(args.out).stat().st_size,
        "set": args.set_name,
        "model_id": model_id,
        "layer": args.layer,
    }


def prose(r: dict) -> str:
    return f"wrote {r['rows']} vectors to {r['out']} ({human_bytes(r['bytes'])})"
