"""`prompt`: one stored run's tokens and the norm of each hidden state (the Prompt view)."""

from __future__ import annotations

from backend.views import prompt

HELP = "one stored run: its tokens, each hidden state's norm per layer, the sets holding it"


def register(p) -> None:
    p.add_argument("--run", dest="run_id", required=True, help="run id (see the Prompt page)")


def run(args, store) -> dict:
    return prompt.compute(store, prompt.Request(run_id=args.run_id)).to_dict()


def prose(r: dict) -> str:
    lines = [
        f"{r['model']} · {r['kind']} run {r['run_id']} · {r['n_tokens']} tokens · "
        f"{r['n_layers']} layers (0 = embeddings){' · truncated' if r['truncated'] else ''}",
        r["text"],
        "sets: " + (", ".join(f"{s['set_name']} (prompt {s['idx']})" for s in r["sets"]) or "none"),
        "norm of each hidden state (rows: layers; columns: tokens)",
        "layer  " + " ".join(f"{t[:8]:>8}" for t in r["tokens"]),
    ]
    for layer, row in enumerate(r["norms"]):
        lines.append(f"{layer:>5}  " + " ".join(f"{v:8.2f}" for v in row))
    return "\n".join(lines)
