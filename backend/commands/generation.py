"""`generate`: sampled continuations with every layer captured, and their commitment."""

from __future__ import annotations

import numpy as np

from backend import catalog, models, prompts
from backend.capture.records import Sampling
from backend.commands._common import (
    LAYER,
    NEW_TOKENS,
    SEED,
    add_model_args,
    add_replace_arg,
    float_in,
    forget_new_set,
    int_in,
    run_job,
    save_file_set,
    set_name_from,
)
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec
from backend.patterns import Pattern
from backend.views import generation as generation_views

HELP = "sample N continuations per prompt, capture every layer, report commitment"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompts", help="TXT / CSV / JSONL file")
    p.add_argument("--set", dest="set_name")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    add_replace_arg(p)
    p.add_argument("--samples", type=int_in(1, 256), default=8)
    p.add_argument("--max-new-tokens", type=NEW_TOKENS, default=8)
    p.add_argument("--temperature", type=float_in(0, 100, low_open=True), default=1.0)
    p.add_argument("--top-p", type=float_in(0, 1, low_open=True), default=1.0)
    p.add_argument("--seed", type=SEED, default=0)
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
    try:
        return _run(args, store, set_name)
    except Exception:
        if created:  # a failed job leaves no new, empty set behind
            forget_new_set(store, set_name)
        raise


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
    df = store.get_set(set_name)
    texts = list(dict.fromkeys(df["text"]))
    labels = dict(zip(df["text"], df["label"]))
    groups = dict(zip(df["text"], df["group"])) if "group" in df else {}
    ss = generation_views.load(
        store,
        p.result["model_id"],
        texts,
        s,
        dtype,
        labels,
        groups,
        args.answer_regex,
        args.versus_label,
        centre=args.centre,
    )
    out = {
        "set": set_name,
        "model_id": p.result["model_id"],
        "runs": p.result["runs"],
        "cached_runs": p.result["cached_runs"],
        "tokens": p.result["tokens"],
        "seconds": round(p.seconds, 3),
        "prompts": [],
        "correlation": None,
        "best": None,
        "separation": None,
    }
    if ss is None:
        return out
    layer = ss.n_layers - 1 if args.layer is None else args.layer
    if not 0 <= layer < ss.n_layers:
        raise LayerScopeError(f"--layer must be between 0 and {ss.n_layers - 1}.")
    table = ss.table(layer, args.step)
    out["prompts"] = [
        {
            "prompt": q.text,
            "label": q.label,
            "samples": [generation_views.join_tokens(g) for g in q.continuations],
            "answers": q.answers,
            "outcomes": q.outcomes,
            "consistency": q.consistency,
            "divergence_step": q.commitment.divergence_step,
            "commitment": np.round(q.commitment.similarity, 4).tolist(),
            **(
                {"tree": generation_views.prefix_tree(q.continuations)}
                if getattr(args, "tree", False)
                else {}
            ),
        }
        for q in ss.prompts
    ]
    out["layer"], out["step"] = layer, args.step
    if len(table) > 2:
        stats = ss.statistics(layer, args.step).to_dict()
        out["correlation"] = stats["correlation"]
        out["partial_correlation"] = stats["partial_correlation"]
        out["best"] = stats["best_held_out"]
    success, meaning = ss.success()
    if len(ss.prompts) > 1 and success.any() and not success.all():
        sep = ss.separation()
        out["separation"] = {
            "success": meaning,
            "runs": len(success),
            "successes": int(success.sum()),
            "judged": int(sep.judged.sum()),
            "accuracy": np.round(sep.accuracy, 4).tolist(),
            "auroc": np.round(sep.auroc, 4).tolist(),
            "best_layer": sep.best_layer,
        }
    return out


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
