"""`ls`: what the cache holds (the Library view's numbers)."""

from __future__ import annotations

from backend.budget import human_bytes
from backend.views import library

HELP = "list models, prompt sets and runs in the cache, with sizes on disk"


def register(p) -> None:
    pass


def run(args, store) -> dict:
    return library.compute(store, library.Request()).to_dict()


def prose(r: dict) -> str:
    s = r["summary"]
    lines = [
        f"{r['db']}: {s['runs']} runs, {s['tokens']} tokens, "
        f"{human_bytes(s['activation_bytes'])} of activations "
        f"({human_bytes(s['file_bytes'])} on disk)",
        f"  where runs live: {s['runs'] - s['shard_runs']} in the file, {s['shard_runs']} in "
        f"{s['shard_files']} Parquet shard files ({human_bytes(s['shard_bytes'])})",
        "",
        "models:",
    ]
    for m in r["models"]:
        lines.append(
            f"  {m['ref']:<28} {m['architecture']:<22} {m['n_layers']:>3} layers "
            f"d={m['d_model']:<5} {m['n_runs']:>6} runs {human_bytes(m['bytes']):>9}"
            f"  [{m['model_id']}]"
        )
    lines += ["", "prompt sets:"]
    for st in r["sets"]:
        covered = [
            f"{c['ref']} ({c['n_runs']}: {_where(c)})"
            for c in r["coverage"]
            if c["set_name"] == st["set_name"]
        ]
        lines.append(
            f"  {st['set_name']:<20} {st['n_prompts']:>6} prompts"
            f"{'  labelled' if st['has_labels'] else ''}"
            f"  runs: {', '.join(covered) or 'none'}"
        )
    return "\n".join(lines)


def _where(c: dict) -> str:
    shards = int(c.get("n_shard_runs") or 0)
    if shards == 0:
        return "file"
    return "shards" if shards == c["n_runs"] else f"{c['n_runs'] - shards} file, {shards} shards"
