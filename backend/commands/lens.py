"""`lens`: logit lens of one prompt, or its per-layer summary over a prompt set."""

from __future__ import annotations

from backend import models
from backend.commands._common import TOP, add_model_args, ensure_runs
from backend.errors import LayerScopeError
from backend.views import lens

HELP = "logit lens: top tokens, KL to final, entropy, rank per layer (one prompt or a set)"


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--prompt", help="the text to read out")
    p.add_argument("--set", dest="set_name", help="summarise the lens over a prompt set instead")
    p.add_argument(
        "--positions",
        default="last",
        choices=["last", "all"],
        help="with --set: the next-token position of each prompt, or all positions",
    )
    p.add_argument("--top", type=TOP, default=5)
    p.add_argument(
        "--lens",
        default="logit",
        choices=lens.LENS_KINDS,
        help="with --set: the logit lens, or a tuned lens trained on the set's cached states "
        "(trained and stored on first use)",
    )


def run(args, store) -> dict:
    if (args.prompt is None) == (args.set_name is None):
        raise LayerScopeError("Give either --prompt TEXT or --set NAME.")
    if args.prompt is not None:
        req = lens.Request(model=args.model, prompt=args.prompt, kind=args.lens, top=args.top)
        head = {"model": args.model, "prompt": args.prompt}
    else:
        model_id, _ = ensure_runs(store, args)
        req = lens.Request(
            model=args.model,
            model_id=model_id,
            set_name=args.set_name,
            positions=args.positions,
            kind=args.lens,
            top=args.top,
        )
        head = {"model": args.model, "set": args.set_name}
    lm = models.get_model(args.model, args.dtype, args.device, args.trust_remote_code)
    lens.check_lens(lm)
    if req.kind == "tuned":
        lens.ensure_tuned(store, lm, req.model_id, req.set_name)
    return {**head, **lens.compute(store, req, lm).to_dict()}


def prose(r: dict) -> str:
    if "prompt" not in r:
        lines = [
            (
                f"{r['model']} on {r['set']}: {r['lens']} lens over {r['n_positions']} positions "
                f"({r['positions']})"
                + (f", {r['summary_prompts']}" if "summary_prompts" in r else "")
            ),
            ("layer  KL mean  KL median  entropy  rank median  top-1 = final  commit here"),
        ]
        for i, layer in enumerate(r["layers"]):
            lines.append(
                f"{layer:>5}  {r['kl_mean'][i]:7.3f}  {r['kl_median'][i]:9.3f}  "
                f"{r['entropy_mean'][i]:7.3f}  {r['rank_median'][i]:11.0f}  "
                f"{r['top1_is_final'][i]:13.2f}  {r['commitment_counts'][i]:11d}"
            )
        if r.get("kl_tuned_heldout"):
            lines.append(
                f"tuned lens vs logit lens, mean KL to the final layer on {r['n_test']} held-out "
                f"prompts (trained on {r['n_train']}):"
            )
            lines.append("layer  kl_logit  kl_tuned")
            for layer, a, b in zip(r["layers"], r["kl_logit_heldout"], r["kl_tuned_heldout"]):
                lines.append(f"{layer:>5}  {a:8.4f}  {b:8.4f}")
        return "\n".join(lines)
    lines = [f"next-token guess after {r['tokens'][-1]!r}, per layer:"]
    for li, layer in enumerate(r["layers"]):
        tops = ", ".join(
            f"{t!r} {p:.2f}" for t, p in zip(r["top_tokens"][li][-1], r["top_probs"][li][-1])
        )
        lines.append(
            f"layer {layer:>2}: {tops}   KL {r['kl_to_final'][li][-1]:.3f}  "
            f"rank {r['final_rank'][li][-1]}"
        )
    lines.append(f"commitment depth (last position): layer {r['commitment_depth'][-1]}")
    if r.get("note"):
        lines.append(f"note: {r['note']}")
    return "\n".join(lines)
