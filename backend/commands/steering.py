"""`steering` (alias `steer`): generate with a direction added to the residual stream after
block L, for a grid of α, next to a random direction of the same norm (the control)."""

from __future__ import annotations

from backend.commands._common import (
    LAYER,
    NEW_TOKENS,
    SEED,
    add_model_args,
    ensure_runs,
    float_in,
    int_in,
)
from backend.errors import LayerScopeError
from backend.views import steering

HELP = "steer generation along a direction at one layer (α grid) vs a random control"


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LayerScopeError("--alphas takes comma-separated numbers, e.g. -8,-4,0,4,8.") from None


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--set", dest="set_name", help="labelled prompt set (prompts and direction)")
    p.add_argument("--prompt", action="append", help="a prompt to steer (repeatable)")
    p.add_argument("--layer", type=LAYER, required=True, help="residual stream after block L")
    p.add_argument(
        "--direction",
        default="means",
        help="means | probe | random | feature:F (a dictionary's decoder row at --layer) | "
        "PATH.npy (default: means)",
    )
    p.add_argument("--labels", help="two labels FROM,TO for the means direction")
    p.add_argument(
        "--alphas",
        default="-8,-4,0,4,8",
        help="comma-separated α, in units of the layer's typical residual norm",
    )
    p.add_argument("--max-new-tokens", type=NEW_TOKENS, default=8)
    p.add_argument("--temperature", type=float_in(0, 100), default=0.0, help="0 = greedy (default)")
    p.add_argument("--seed", type=SEED, default=0, help="sampling seed and random control seed")
    p.add_argument(
        "--start", type=int_in(0, 10_000_000), default=0, help="steer positions >= START only"
    )
    p.add_argument("--max-prompts", type=int_in(1, 10_000), default=steering.MAX_PROMPTS)
    p.add_argument(
        "--answers",
        help="per label (in --labels order) its answer words: A1,A2;B1,B2 (default: the "
        "agreement set's verbs, else learnt from the unsteered first tokens)",
    )
    p.add_argument(
        "--store-runs",
        action="store_true",
        help="also store the direction's steered generations as runs (every layer), one "
        "prompt set per α named <set>+steer(L<layer> <direction> <α>)",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute even if stored")


def run(args, store) -> dict:
    args.model = args.model or "demo"
    if args.set_name:
        ensure_runs(store, args)
    labels = None
    if args.labels:
        labels = tuple(x.strip() for x in args.labels.split(",") if x.strip())
    answers = None
    if args.answers:
        answers = tuple(
            tuple(w.strip() for w in part.split(",") if w.strip())
            for part in args.answers.split(";")
        )
    req = steering.Request(
        model=args.model,
        prompts=tuple(args.prompt or ()),
        set_name=args.set_name,
        layer=args.layer,
        direction=args.direction,
        labels=labels,
        alphas=_floats(args.alphas),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        start=args.start,
        max_prompts=args.max_prompts,
        answers=answers,
        dtype=args.dtype,
        device=args.device,
    )
    res = steering.compute(store, req, use_cache=not args.no_cache)
    out = {"model": req.model, **res.to_dict(), "from_cache": res.from_cache}
    if args.store_runs:  # the direction's steered generations as runs, one prompt set per α
        from backend.views import steering_runs

        sets = steering_runs.store_runs(store, req)
        out["stored_sets"] = {f"{a:g}": name for a, name in sets.items()}
    return out


def _f(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def prose(r: dict) -> str:
    lines = [
        f"layer {r['layer']}, direction {r['direction_kind']} (norm {r['direction_norm']:.3f}; "
        f"random control of the same norm); α in units of the typical norm "
        f"{r['typical_norm_median']:.3f}"
    ]
    if r["flip_rate"] is not None:
        tw = r["toward"] or {}
        labs = list(tw.get("direction", {}))
        head = "alpha  flip(direction)  flip(random)"
        head += "".join(f"  {lab}->other(dir/rand)" for lab in labs)
        lines.append(head)
        for i, a in enumerate(r["alphas"]):
            fd, fc = r["flip_rate"]["direction"][i], r["flip_rate"]["control"][i]
            row = f"{a:>5g}  {fd:>15.2f}  {fc:>12.2f}"
            for lab in labs:
                d, c = tw["direction"][lab][i], tw["control"][lab][i]
                row += f"  {_f(d):>{len(lab) + 8}}/{_f(c)}"
            lines.append(row)
    lines.append(f"continuations of {r['prompts'][0]!r}:")
    for i, a in enumerate(r["alphas"]):
        d, c = r["continuations"]["direction"][0][i], r["continuations"]["control"][0][i]
        lines.append(f"{a:>5g}  {d!r}  | random: {c!r}")
    for a, name in (r.get("stored_sets") or {}).items():
        lines.append(f"steered runs at α = {a} stored as the prompt set {name!r}")
    return "\n".join(lines)
