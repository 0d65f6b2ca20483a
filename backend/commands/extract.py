"""`extract`: capture every layer of a model on a prompt file or a stored/bundled set."""

from __future__ import annotations

import sys

from backend import catalog, prompts
from backend.commands._common import (
    COUNT,
    add_model_args,
    add_replace_arg,
    float_in,
    forgotten_if_failed,
    int_in,
    run_job,
    save_file_set,
    set_name_from,
)
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec, engine_options

HELP = "run a model on prompts and cache every layer's hidden states"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompts", help="TXT (one per line), CSV or JSONL file")
    p.add_argument("--set", dest="set_name", help="prompt set name (default: file name)")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--group-column")
    add_replace_arg(p)
    p.add_argument("--max-tokens", type=COUNT, help="truncate longer prompts (flagged, warned)")
    p.add_argument(
        "--batch-tokens",
        type=COUNT,
        default=8192,
        help="most tokens per forward batch, padding included (on the CPU a batch's captured "
        "states also stay within 160 MB: ~4,000 tokens of GPT-2 small, ~1,100 of a 1B model)",
    )
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: this process, into the DuckDB file; ray: a Ray cluster, into Parquet "
        "shards the store reads in place (pip install -r requirements-scale.txt)",
    )
    p.add_argument("--workers", type=int_in(1, 1024), default=1, help="ray: model actors")
    p.add_argument(
        "--gpus-per-worker", type=float_in(0, 64), default=0.0, help="ray: 0 = CPU actors"
    )
    p.add_argument(
        "--ray-address", help="ray: join this cluster (auto | ray://head:10001); default: local"
    )
    p.add_argument("--shard-root", help="ray: where shards go (default: shards/ next to --db)")
    p.add_argument(
        "--checkpoints",
        help="one job over the model's training checkpoints: 'all' (a bundled model's, e.g. "
        "demo) or steps/revisions 'step0,step1250' (hub models such as Pythia); each becomes "
        "its own model <model>@<revision>, with its behaviour measured for the Training view",
    )


def run(args, store) -> dict:
    if args.prompts is None and args.set_name is None:
        raise LayerScopeError("Give --prompts FILE or --set NAME (a stored or bundled set).")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise LayerScopeError("--max-tokens must be at least 1.")
    set_name = args.set_name or set_name_from(args.prompts)
    created = False
    if args.prompts:
        df = prompts.load_prompts(
            args.prompts, args.text_column, args.label_column, args.group_column
        )
        repeated, created = save_file_set(store, args, set_name, df)
        if repeated:
            print(
                f"note: {repeated} repeated prompt(s) kept once (first row wins)", file=sys.stderr
            )
    else:
        catalog.ensure_set(store, set_name)
    with forgotten_if_failed(store, set_name, created):
        return _run(args, store, set_name)


def _run(args, store, set_name: str) -> dict:
    checked = _check_inputs(args, store, set_name)
    if args.checkpoints is not None:
        return {**_run_checkpoints(args, store, set_name), "sanity": checked}
    spec = JobSpec(
        model=args.model,
        set_name=set_name,
        dtype=args.dtype,
        device=args.device,
        max_tokens=args.max_tokens,
        batch_tokens=args.batch_tokens,
        trust_remote_code=args.trust_remote_code,
        options=engine_options(
            args.engine, args.workers, args.gpus_per_worker, args.ray_address, args.shard_root
        ),
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
        "skipped": r.get("skipped", 0),
        "notes": r.get("notes", []),
        "seconds": round(p.seconds, 3),
        "status": p.status,
        "engine": args.engine,
        "sanity": checked,
        **({"ray_start_s": r.get("ray_start_s", 0.0)} if args.engine == "ray" else {}),
    }


def _check_inputs(args, store, set_name: str) -> dict:
    """Before the job: what the tokenizer makes of the prompts (unknown tokens, prompts that
    tokenize identically, truncated, empty); each warning on stderr, the counts in the JSON."""
    from backend.jobs.extract import check_inputs  # the jobs stack: only when computing

    spec = JobSpec(
        model=args.model,
        set_name=set_name,
        max_tokens=args.max_tokens,
        trust_remote_code=args.trust_remote_code,
    )
    checked = check_inputs(store, spec)
    for w in checked.warnings:
        print(f"warning: {w}.", file=sys.stderr)
    return checked.to_dict()


def _run_checkpoints(args, store, set_name: str) -> dict:
    """``--checkpoints``: one job, one progress bar, every checkpoint its own model."""
    from backend.views.training import checkpoint_refs

    if args.engine != "local":
        raise LayerScopeError("--checkpoints runs on the local engine only (drop --engine ray).")
    refs = checkpoint_refs(args.model, args.checkpoints)
    spec = JobSpec(
        model=args.model,
        set_name=set_name,
        kind="checkpoints",
        dtype=args.dtype,
        device=args.device,
        max_tokens=args.max_tokens,
        batch_tokens=args.batch_tokens,
        trust_remote_code=args.trust_remote_code,
        options={"checkpoints": refs},
    )
    p = run_job(store, spec, quiet=args.json)
    r = p.result
    return {
        "set": set_name,
        "model": args.model,
        "checkpoints": r["checkpoints"],
        "runs": r["runs"],
        "cached_runs": r["cached_runs"],
        "tokens": r["tokens"],
        "truncated": r["truncated"],
        "seconds": round(p.seconds, 3),
        "status": p.status,
        "engine": args.engine,
    }


def prose(r: dict) -> str:
    if "checkpoints" in r:
        return (
            f"{r['set']} on {len(r['checkpoints'])} checkpoints of {r['model']}: {r['runs']} runs "
            f"computed, {r['cached_runs']} found in the cache, {r['tokens']} tokens in "
            f"{r['seconds']:.1f} s; behaviour measured: "
            + ", ".join(c["ref"] for c in r["checkpoints"])
        )
    s = (
        f"{r['set']} on {r['model']}: {r['runs']} runs computed, {r['cached_runs']} found in the "
        f"cache, {r['tokens']} tokens in {r['seconds']:.1f} s"
    )
    if r.get("engine") == "ray":
        s += f" (Ray engine, into Parquet shards; Ray start-up {r['ray_start_s']:.1f} s)"
    for note in r.get("notes", []):
        s += f"\nnote: {note}"
    return s
