"""`export`: a set's activations to Parquet (one row per run, layer, position)."""

from __future__ import annotations

from pathlib import Path

from backend import catalog
from backend.budget import human_bytes
from backend.commands._common import LAYER
from backend.errors import LayerScopeError

HELP = "export a prompt set's activations to Parquet"


def register(p) -> None:
    p.add_argument("--model", default=None, help="default: the one model with runs for the set")
    p.add_argument("--set", dest="set_name", required=True)
    p.add_argument("--layer", type=LAYER, help="one layer (default: all)")
    p.add_argument("--out", required=True, help="output .parquet path")


def check_out(path: str, suffix: str = ".parquet") -> Path:
    """An output file path a user gave: its folder must exist and it must not be a folder."""
    out = Path(path)
    if out.is_dir():
        raise LayerScopeError(
            f"--out {out} is a folder; give a file name such as {out / ('acts' + suffix)}."
        )
    if not out.parent.is_dir():
        raise LayerScopeError(f"Cannot write {out}: the folder {out.parent} does not exist.")
    return out


def run(args, store) -> dict:
    check_out(args.out)
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
