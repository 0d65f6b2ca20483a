"""`patching` (alias `patch`): activation patching of a clean / corrupted prompt pair."""

from __future__ import annotations

from backend.commands._common import SEED, TOP, add_model_args, int_in
from backend.errors import LayerScopeError
from backend.views import patching

COMPONENT = {"resid": "the residual stream", "attn": "block L's attention output",
             "mlp": "block L's MLP output",
             "feature": "the clean run with one latent ablated (error term kept)"}  # fmt: skip
HELP = "activation patching: copy clean residual states into a corrupted run, layer × position"


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise LayerScopeError(f"--{what} takes comma-separated integers, e.g. 0,2,5.") from None


def register(p) -> None:
    add_model_args(p, need_set=False)
    p.add_argument("--clean", required=True, help="the clean prompt")
    p.add_argument("--corrupted", required=True, help="the corrupted prompt (same token count)")
    p.add_argument("--answer", help="token whose logit counts up (default: clean top-1)")
    p.add_argument("--against", help="token whose logit counts down (default: corrupted top-1)")
    p.add_argument("--layers", help="comma-separated layers to patch (default: all)")
    p.add_argument("--positions", help="comma-separated positions to patch (default: all)")
    p.add_argument("--top", type=TOP, default=5, help="patched next tokens kept per cell")
    p.add_argument(
        "--metric",
        default="logit-diff",
        choices=list(patching.METRICS),
        help="logit(answer) - logit(against), or p(answer) (answer = clean top-1 by default)",
    )
    p.add_argument(
        "--component",
        default="resid",
        choices=["resid", "attn", "mlp", "feature"],
        help="patch the residual stream, or the output of block L's attention / MLP; feature: "
        "ablate latent --feature of layer L's dictionary in the clean run (error term kept)",
    )
    p.add_argument(
        "--feature", type=int, help="--component feature: the latent (dictionary trained on --set)"
    )
    p.add_argument(
        "--method",
        default="exact",
        choices=list(patching.METHODS),
        help="exact: one patched forward per cell; atp: attribution patching, every cell "
        "estimated as (clean - corrupted) · gradient from one backward pass",
    )
    p.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="N",
        help="with --method atp: patch the top N cells by |AtP| exactly and report the "
        "Spearman rank agreement of the two over them (typed pair)",
    )
    p.add_argument("--set", dest="set_name", help="a bundled set with minimal pairs (--pairs)")
    p.add_argument(
        "--pairs",
        action="store_true",
        help="mean recovery over the set's pairs shaped like --clean/--corrupted, with an interval",
    )
    p.add_argument(
        "--n-boot", type=int_in(0, 100_000), default=1000, help="bootstrap resamples of pairs"
    )
    p.add_argument("--seed", type=SEED, default=0, help="seed of the bootstrap over pairs")
    p.add_argument(
        "--cell",
        help="LAYER,POSITION: also print that cell's patched next-token distribution "
        "(typed pair), next to the clean and corrupted ones",
    )
    p.add_argument("--no-cache", action="store_true", help="recompute even if stored")


def run(args, store) -> dict:
    req = patching.Request(
        model=args.model or "demo",
        clean=args.clean,
        corrupted=args.corrupted,
        answer=args.answer,
        against=args.against,
        layers=_ints(args.layers, "layers"),
        positions=_ints(args.positions, "positions"),
        top_k=args.top,
        dtype=args.dtype,
        device=args.device,
        metric=args.metric,
        component=args.component,
        set_name=args.set_name,
        pairs=args.pairs,
        n_boot=args.n_boot,
        seed=args.seed,
        method=args.method,
        verify=args.verify,
        feature=args.feature,
    )
    cell = _ints(args.cell, "cell")
    if cell is not None and len(cell) != 2:
        raise LayerScopeError("--cell takes LAYER,POSITION, e.g. 2,6.")
    res = patching.compute(store, req, use_cache=not args.no_cache)
    out = {"model": req.model, **res.to_dict(), "from_cache": res.from_cache}
    if cell is not None:
        d = patching.cell_distribution(store, req, *cell)
        out["cell"] = {"layer": d.layer, "position": d.position,
                       **d.to_frame().round(6).to_dict(orient="list")}  # fmt: skip
    return out


def prose(r: dict) -> str:
    toks = r["tokens"]
    width = max(8, *(len(repr(t)) for t in toks))
    what = (
        f"p({r['answer']!r})"
        if r["metric"] == "prob"
        else f"logit({r['answer']!r}) - logit({r['against']!r})"
    )
    what = r.get("metric_label", what)
    mean = f" (mean over {r['n_pairs']} pairs; answers per pair)" if "n_pairs" in r else ""
    lines = [
        f"metric = {what}{mean}: clean {r['clean_metric']:.3f}, corrupted "
        f"{r['corrupted_metric']:.3f} (clean states {r['clean_source']})",
        f"recovery (0 = corrupted, 1 = clean) per layer × position, patching "
        f"{COMPONENT[r['component']]}"
        + (" (attribution patching estimate):" if r.get("method") == "atp" else ":"),
        *([f"warning: {r['warning']}"] if r.get("warning") else []),
        "layer " + " ".join(f"{toks[p]!r:>{width}}" for p in r["positions"]),
    ]
    for li, layer in enumerate(r["layers"]):
        lines.append(f"{layer:>5} " + " ".join(f"{v:>{width}.2f}" for v in r["recovery"][li]))
    if "effect" in r:
        lines.append(f"effect of ablating feature {r['feature']} on the metric (ablated - clean):")
        lines.append("      " + " ".join(f"{v:>{width}.3f}" for v in r["effect"][0]))
    if "n_pairs" in r:
        lines.append(f"interval: {r['interval']}; {r['pairs_skipped']} aligned pairs skipped")
        for li, layer in enumerate(r["layers"]):
            cells = " ".join(
                f"{f'{lo:.2f}..{hi:.2f}':>{width}}"
                for lo, hi in zip(r["recovery_lo"][li], r["recovery_hi"][li])
            )
            lines.append(f"{layer:>5} {cells}")
    if "agreement" in r:
        a = r["agreement"]
        rho = "undefined" if a["spearman"] is None else f"{a['spearman']:.3f}"
        lines.append(f"AtP vs exact over the top {a['n']} cells by |AtP|: Spearman {rho}")
        for (la, p), x, e in zip(a["cells"], a["atp"], a["exact"]):
            lines.append(f"  layer {la:>3} position {p:>3}: AtP {x:+.3f}  exact {e:+.3f}")
    if "cell" in r:
        c = r["cell"]
        lines.append(f"layer {c['layer']}, position {c['position']} patched: next token")
        for t, p, cl, co in zip(c["token"], c["patched"], c["clean"], c["corrupted"]):
            lines.append(f"  {t!r:>14} patched {p:.3f}  clean {cl:.3f}  corrupted {co:.3f}")
    return "\n".join(lines)
