"""`similarity`: the Similarity view's matrices, with their axis labels."""

from __future__ import annotations

from backend.commands._common import COUNT, LAYER, add_model_args, ensure_runs, int_in
from backend.errors import LayerScopeError
from backend.views import similarity as similarity_view

HELP = "similarity matrices: layer-cka | layer-cosine | prompt | token | model-cka"


def register(p) -> None:
    add_model_args(p)
    p.add_argument(
        "--kind",
        default="layer-cka",
        choices=similarity_view.KINDS + tuple(similarity_view.ALIASES),
    )
    p.add_argument("--layer", type=LAYER, help="prompt/token kinds (default: last layer)")
    p.add_argument("--other-model", help="model-cka: the model to compare with")
    p.add_argument(
        "--units",
        choices=similarity_view.UNITS,
        default=None,
        help="tokens (default for layer/model kinds) or pooled prompts: last | mean",
    )
    p.add_argument("--debiased", action="store_true", help="debiased CKA (unbiased HSIC)")
    p.add_argument("--order", default="cluster", choices=similarity_view.ORDERS, help="prompt kind")
    p.add_argument(
        "--prompt", type=int_in(0, 10_000_000), default=None, help="token kind: prompt index in set"
    )
    p.add_argument(
        "--center",
        action="store_true",
        help="prompt/token kinds: subtract the mean vector first (anisotropy)",
    )
    p.add_argument("--max-units", type=COUNT, default=similarity_view.MAX_UNITS)


def run(args, store) -> dict:
    model_id, runs = ensure_runs(store, args)
    other_id = None
    if args.other_model:
        other_args = type(args)(**{**vars(args), "model": args.other_model})
        other_id, _ = ensure_runs(store, other_args)
    run_id = None
    if args.prompt is not None:
        hit = runs[runs["idx"] == args.prompt]
        if hit.empty:
            raise LayerScopeError(f"No prompt {args.prompt} in set '{args.set_name}'.")
        run_id = hit["run_id"].iloc[0]
    units = args.units or ("last" if args.kind == "prompt" else "tokens")
    req = similarity_view.Request(
        kind=args.kind,
        model_id=model_id,
        set_name=args.set_name,
        layer=args.layer,
        other_model_id=other_id,
        units=units,
        run_id=run_id,
        order=args.order,
        debiased=args.debiased,
        max_units=args.max_units,
        center=args.center,
    )
    return similarity_view.compute(store, req).to_dict()


def prose(r: dict) -> str:
    """The matrix in display order, as a table (large matrices: use --json)."""
    order = r["order"] or list(range(len(r["rows"])))
    square = len(r["rows"]) == len(r["cols"]) and r["order"] is not None
    rows = order if square else list(range(len(r["rows"])))
    cols = order if square else list(range(len(r["cols"])))
    lines = [
        (
            f"{r['kind']} ({r['measure']}, fixed range {r['range'][0]:g}..{r['range'][1]:g}), "
            f"{len(r['rows'])} x {len(r['cols'])}. {r['caption']}"
        )
    ]
    if len(cols) > 30:
        lines.append("(large matrix: use --json for the values)")
    else:
        width = max(len(str(r["rows"][i])[:24]) for i in rows)
        lines.append(" " * width + "  " + " ".join(f"{str(r['cols'][j])[:6]:>6}" for j in cols))
        for i in rows:
            cells = (r["matrix"][i][j] for j in cols)
            lines.append(
                f"{str(r['rows'][i])[:24]:<{width}}  "
                + " ".join("     ·" if v is None else f"{v:6.3f}" for v in cells)
            )
    if r["note"]:
        lines.append(r["note"])
    return "\n".join(lines)
