"""`generate`: sampled continuations with every layer captured, and their commitment."""

from __future__ import annotations

from backend import catalog, models, prompts
from backend.commands._common import (
    LAYER,
    NEW_TOKENS,
    SEED,
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
from backend.jobs.base import JobSpec
from backend.patterns import Pattern
from backend.records import Sampling
from backend.views import generation as generation_views

HELP = "sample N continuations per prompt, capture every layer, report commitment"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompts", help="TXT / CSV / JSONL file")
    p.add_argument("--set", dest="set_name")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    add_replace_arg(p)
    p.add_argument("--samples", type=int_in(1, 256), default=Sampling.samples)
    p.add_argument("--max-new-tokens", type=NEW_TOKENS, default=Sampling.max_new_tokens)
    p.add_argument(
        "--temperature", type=float_in(0, 100, low_open=True), default=Sampling.temperature
    )
    p.add_argument("--top-p", type=float_in(0, 1, low_open=True), default=Sampling.top_p)
    p.add_argument("--seed", type=SEED, default=Sampling.seed)
    p.add_argument("--answer-regex", help="outcome = first match (group 1 if any)")
    p.add_argument("--layer", type=LAYER, help="layer for commitment (default last)")
    p.add_argument(
        "--step",
        type=int_in(0, 4096),
        default=1,
        help="generation step (0 = last prompt token, identical across runs)",
    )
    p.add_argument(
        "--versus-label",
        action="store_true",
        help="outcome = correct / wrong against the set's label column",
    )
    p.add_argument(
        "--tree",
        action="store_true",
        help="add each prompt's prefix tree of continuations (nodes = shared prefixes, "
        "run counts) to the output",
    )
    p.add_argument(
        "--centre",
        choices=generation_views.CENTRES,
        default="start",
        help="reference subtracted before cosines: each run's prompt-end state "
        "(start, default), the set's mean state (set), or none",
    )


def _validate(args) -> None:
    """Everything that can be checked before sampling (which may take minutes)."""
    if not args.prompts and not args.set_name:
        raise LayerScopeError("Give --prompts FILE or --set NAME.")
    Sampling(args.samples, args.max_new_tokens, args.temperature, args.top_p, args.seed).validate()
    if args.answer_regex:
        Pattern(args.answer_regex)  # compiles, or one sentence
    cfg = models.read_config(models.resolve(args.model))
    n_layers = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    if args.layer is not None and n_layers and not 0 <= args.layer <= n_layers:
        raise LayerScopeError(f"--layer must be between 0 and {n_layers} for {args.model}.")
    if args.step < 0 or args.step > args.max_new_tokens:
        raise LayerScopeError(
            f"--step must be between 0 and --max-new-tokens ({args.max_new_tokens})."
        )


def run(args, store) -> dict:
    _validate(args)
    set_name = args.set_name or set_name_from(args.prompts)
    created = False
    if args.prompts:
        df = prompts.load_prompts(args.prompts, args.text_column, args.label_column)
        created = save_file_set(store, args, set_name, df)[1]
    else:
        catalog.ensure_set(store, set_name)
    with forgotten_if_failed(store, set_name, created):
        return _run(args, store, set_name)


def _run(args, store, set_name: str) -> dict:
    s = Sampling(args.samples, args.max_new_tokens, args.temperature, args.top_p, args.seed)
    s.validate()
    spec = JobSpec(
        model=args.model,
        set_name=set_name,
        kind="generate",
        dtype=args.dtype,
        device=args.device,
        options=s.key() | {"samples": s.samples},
    )
    p = run_job(store, spec, quiet=args.json)
    dtype = str(models.pick_dtype(args.dtype, args.device, model=args.model)).removeprefix("torch.")
    req = generation_views.Request(
        model_id=p.result["model_id"],
        set_name=set_name,
        sampling=s,
        dtype=dtype,
        regex=args.answer_regex,
        versus_label=args.versus_label,
        centre=args.centre,
        layer=args.layer,
        step=args.step,
        tree=bool(getattr(args, "tree", False)),
    )
    out = {
        "set": set_name,
        "model_id": p.result["model_id"],
        "runs": p.result["runs"],
        "cached_runs": p.result["cached_runs"],
        "tokens": p.result["tokens"],
        "seconds": round(p.seconds, 3),
    }
    return out | generation_views.compute(store, req).to_dict()


def prose(r: dict) -> str:
    lines = [f"{r['set']}: {r['runs']} samples generated, {r['cached_runs']} cached"]
    for p in r["prompts"][:10]:
        lines.append(
            f"\n{p['prompt']}  (consistency {p['consistency']:.2f}, diverge at step "
            f"{p['divergence_step']})"
        )
        lines += [f"   {s}" for s in p["samples"][:8]]
    c = r["correlation"]
    if c:
        lines.append(
            f"\ncommitment (layer {r['layer']}, step {r['step']}) vs consistency "
            f"across {c['n']} prompts: "
            + generation_views.correlation_text(c, r.get("partial_correlation"))
        )
    b = r.get("best")
    if b and b.get("layer") is not None:
        lines.append(
            f"best cell, chosen on {b['n_select']} prompts and reported on the other "
            f"{b['n_test']}: layer {b['layer']}, step {b['step']}: held-out r = {generation_views.fmt(b['r'])}"
            f" (partial r = {generation_views.fmt(b['partial_r'])}; r on the choosing half {generation_views.fmt(b['r_select'])})"
        )
    sep = r.get("separation")
    if sep:
        lines.append(
            f"outcome separation ({sep['success']}; {sep['successes']}/{sep['runs']} "
            f"runs succeed, {sep['judged']} judged): AUROC by layer "
            + " ".join(f"{a:.2f}" for a in sep["auroc"])
            + f"; best layer {sep['best_layer']}"
        )
    return "\n".join(lines)
