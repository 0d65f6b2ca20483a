"""`patching` (alias `patch`): activation patching of a clean / corrupted prompt pair."""

from __future__ import annotations

from backend.commands._common import add_model_args
from backend.errors import LayerScopeError
from backend.views import patching

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
    p.add_argument("--top", type=int, default=5, help="patched next tokens kept per cell")
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
    )
    res = patching.compute(store, req, use_cache=not args.no_cache)
    return {"model": req.model, **res.to_dict(), "from_cache": res.from_cache}


def prose(r: dict) -> str:
    toks = r["tokens"]
    width = max(8, *(len(repr(t)) for t in toks))
    lines = [
        f"metric = logit({r['answer']!r}) - logit({r['against']!r}): clean "
        f"{r['clean_metric']:.3f}, corrupted {r['corrupted_metric']:.3f} "
        f"(clean states {r['clean_source']})",
        "recovery (0 = corrupted, 1 = clean) per layer × position:",
        "layer " + " ".join(f"{toks[p]!r:>{width}}" for p in r["positions"]),
    ]
    for li, layer in enumerate(r["layers"]):
        lines.append(f"{layer:>5} " + " ".join(f"{v:>{width}.2f}" for v in r["recovery"][li]))
    return "\n".join(lines)
