"""`training`: probes, behaviour, CKA to the final model and layer statistics over a model's
training checkpoints (the Training view's numbers)."""

from __future__ import annotations

from backend import catalog
from backend.commands._common import COUNT, LAYER, add_model_args, int_in, run_job
from backend.jobs.base import JobSpec
from backend.views import similarity, training

HELP = "training as an axis: probe accuracy, behaviour, CKA to the final model over checkpoints"


def register(p) -> None:
    add_model_args(p)
    p.add_argument(
        "--checkpoints",
        default="all",
        help="'all' (a bundled model's checkpoints) or steps/revisions 'step0,step1250,...'",
    )
    p.add_argument("--pool", default="last", choices=["last", "mean"])
    p.add_argument("--folds", type=int_in(2, 100), default=5)
    p.add_argument("--method", default="logistic", choices=["logistic", "ridge"])
    p.add_argument(
        "--cka-units", default="tokens", choices=list(similarity.UNITS), help="units of the CKA"
    )
    p.add_argument(
        "--layer", type=LAYER, default=None, help="trajectory layer (default: best probe layer)"
    )
    p.add_argument("--max-runs", type=COUNT, default=200, help="layer statistics: first N prompts")


def request_from(args, refs: list[str]) -> training.Request:
    return training.Request(
        set_name=args.set_name,
        checkpoints=tuple(refs),
        pool=args.pool,
        folds=args.folds,
        method=args.method,
        cka_units=args.cka_units,
        layer=args.layer,
        max_runs=args.max_runs,
    )


def run(args, store) -> dict:
    catalog.ensure_set(store, args.set_name)
    refs = training.checkpoint_refs(args.model, args.checkpoints, store)
    req = request_from(args, refs)
    have, missing = training.coverage(store, req)
    unmeasured = [r for r, mid in have.items() if training.behaviour_of(store, mid, args.set_name) is None]  # fmt: skip
    if missing or unmeasured or args.dtype != "auto":  # compute what is missing, as extract does
        spec = JobSpec(
            model=args.model,
            set_name=args.set_name,
            kind="checkpoints",
            dtype=args.dtype,
            device=args.device,
            trust_remote_code=args.trust_remote_code,
            options={"checkpoints": refs},
        )
        run_job(store, spec, quiet=args.json)
    res = training.compute(store, req)
    return {"model": args.model, **res.to_dict()}


def prose(r: dict) -> str:
    steps, layers = r["steps"], r["layers"]
    b, o = r["behaviour"], r["onsets"]
    lines = [
        f"{r['model']} on {r['set']}: {len(steps)} checkpoints (steps {', '.join(map(str, steps))}),"
        f" layers {layers[0]}–{layers[-1]}",
        "probe accuracy (rows: step; columns: layer) | shuffled control at the best layer | "
        "answer accuracy | held-out loss",
    ]
    for i, s in enumerate(steps):
        acc = " ".join(f"{a:.2f}" for a in r["probe_accuracy"][i])
        ctl = r["probe_control"][i][layers.index(r["probe_best_layer"][i])]
        ans, loss = b["answer_accuracy"][i], b["heldout_loss"][i]
        lines.append(
            f"{s:>6}  {acc}  | {ctl:.2f} | "
            + ("  -  " if ans is None else f"{ans:.3f}")
            + " | "
            + ("  -  " if loss is None else f"{loss:.3f}")
        )
    lines.append("CKA to the final checkpoint (rows: step; columns: layer):")
    lines += [
        f"{s:>6}  " + " ".join(f"{v:.2f}" for v in row) for s, row in zip(steps, r["cka_to_final"])
    ]
    st = r["stats"]
    lines.append(
        "last layer over training: massive ratio "
        + ", ".join(f"{row[-1]:.0f}" for row in st["massive_ratio"])
        + "; effective rank "
        + ", ".join(f"{row[-1]:.1f}" for row in st["effective_rank"])
    )
    lvl = o["level"]
    lines.append(
        f"risen from step: decodable {o['decodable']}, probe ≥ {lvl} {o['probe']}, "
        f"behaviour ≥ {lvl} {o['behaviour']}, CKA of layer {o['cka_layer']} ≥ {lvl} {o['cka']}"
    )
    if r["missing"]:
        lines.append(f"not shown (no activations yet): {', '.join(r['missing'])}")
    return "\n".join(lines)
