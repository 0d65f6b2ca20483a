"""`generate`: sampled continuations with every layer captured, and their commitment."""

from __future__ import annotations

from backend import catalog, generation_views, models, prompts
from backend.analysis.commitment import correlate
from backend.commands._common import add_model_args, run_job, set_name_from
from backend.errors import LayerScopeError
from backend.generate import Sampling
from backend.worker import JobSpec

HELP = "sample N continuations per prompt, capture every layer, report commitment"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompts", help="TXT / CSV / JSONL file")
    p.add_argument("--set", dest="set_name")
    p.add_argument("--text-column")
    p.add_argument("--label-column")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--answer-regex", help="outcome = first match (group 1 if any)")
    p.add_argument("--layer", type=int, help="layer for commitment (default last)")
    p.add_argument("--step", type=int, default=1, help="generation step (0 = last prompt token, identical across runs)")


def run(args, store) -> dict:
    if not args.prompts and not args.set_name:
        raise LayerScopeError("Give --prompts FILE or --set NAME.")
    set_name = args.set_name or set_name_from(args.prompts)
    if args.prompts:
        store.save_prompt_set(set_name, prompts.load_prompts(
            args.prompts, args.text_column, args.label_column), source=args.prompts)
    else:
        catalog.ensure_set(store, set_name)
    s = Sampling(args.samples, args.max_new_tokens, args.temperature, args.top_p, args.seed)
    s.validate()
    spec = JobSpec(model=args.model, set_name=set_name, kind="generate", dtype=args.dtype,
                   device=args.device, options=s.key() | {"samples": s.samples})
    p = run_job(store, spec, quiet=args.json)
    dtype = str(models.pick_dtype(args.dtype, args.device)).removeprefix("torch.")
    texts = list(store.get_set(set_name)["text"])
    items = generation_views.prompt_samples(store, p.result["model_id"], s.key() | {"dtype": dtype},
                                            texts, args.answer_regex)
    layer = -1 if args.layer is None else args.layer
    table = generation_views.summary_table(items, dict(zip(texts, store.get_set(set_name)["label"])),
                                           layer, args.step)
    corr = correlate(table["commitment"], table["consistency"]) if len(table) > 2 else None
    return {"set": set_name, "runs": p.result["runs"], "cached_runs": p.result["cached_runs"],
            "tokens": p.result["tokens"], "seconds": round(p.seconds, 3),
            "prompts": [{"prompt": it.text, "samples": [" ".join(g) for g in it.generated],
                         "outcomes": it.outcomes, "consistency": it.consistency,
                         "divergence_step": it.commitment.divergence_step,
                         "commitment": it.commitment.similarity.round(4).tolist()}
                        for it in items],
            "correlation": None if corr is None else corr.__dict__}


def prose(r: dict) -> str:
    lines = [f"{r['set']}: {r['runs']} samples generated, {r['cached_runs']} cached"]
    for p in r["prompts"][:10]:
        lines.append(f"\n{p['prompt']}  (consistency {p['consistency']:.2f}, diverge at step "
                     f"{p['divergence_step']})")
        lines += [f"   {s}" for s in p["samples"][:8]]
    c = r["correlation"]
    if c:
        lines.append(f"\ncommitment vs consistency across {c['n']} prompts: Pearson "
                     f"{c['pearson']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}], Spearman "
                     f"{c['spearman']:.2f}")
    return "\n".join(lines)
