"""`extract`: capture every layer of a model on a prompt file or a stored/bundled set."""

from __future__ import annotations

import sys

from backend import catalog, prompts
from backend.commands._common import add_model_args, run_job, set_name_from
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec

HELP = "run a model on prompts and cache every layer's hidden states"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompts", help="TXT (one per line), CSV or JSONL file")
    p.add_argument("--set", dest="set_name", help="prompt set name (default: file name)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--group-column")
    p.add_argument("--max-tokens", type=int, help="truncate longer prompts (flagged, warned)")
    p.add_argument("--batch-tokens", type=int, default=8192)


def run(args, store) -> dict:
    if args.prompts is None and args.set_name is None:
        raise LayerScopeError("Give --prompts FILE or --set NAME (a stored or bundled set).")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise LayerScopeError("--max-tokens must be at least 1.")
    set_name = args.set_name or set_name_from(args.prompts)
    if args.prompts:
        df = prompts.load_prompts(
            args.prompts, args.text_column, args.label_column, args.group_column
        )
        store.save_prompt_set(set_name, df, source=str(args.prompts))
        if store.last_duplicates:
            print(
                f"note: {store.last_duplicates} repeated prompt(s) kept once (first row wins)",
                file=sys.stderr,
            )
    else:
        catalog.ensure_set(store, set_name)
    spec = JobSpec(
        model=args.model,
        set_name=set_name,
        dtype=args.dtype,
        device=args.device,
        max_tokens=args.max_tokens,
        batch_tokens=args.batch_tokens,
        trust_remote_code=args.trust_remote_code,
    )
    p = run_job(store, spec, quiet=args.json)
    r = p.result
    return {
        "set": set_name,
        "model": args.model,
        "model_id": r["model_id"],
        "runs": r["runs"],
        "cached_runs": r["cached_runs"],
        "tokens": r["tokens"],
        "truncated": r["truncated"],
        "seconds": round(p.seconds, 3),
        "status": p.status,
    }


def prose(r: dict) -> str:
    s = (
        f"{r['set']} on {r['model']}: {r['runs']} runs computed, {r['cached_runs']} found in the "
        f"cache, {r['tokens']} tokens in {r['seconds']:.1f} s"
    )
    if r["truncated"]:
        s += f"\nwarning: {r['truncated']} prompts were truncated (--max-tokens)"
    return s
