"""`features`: sparse dictionaries (TopK SAEs) of one layer, trained on the cache, and a browser.

features train  --set S --layer L [--latents N] [--k K] [--seed S]   train + held-out numbers
features export --set S --layer L --out DIR      SAELens layout (cfg.json + safetensors)
features import --layer L --from DIR             bring an SAELens TopK dictionary
features        --set S --layer L [--feature F]  the browser (latents, contexts, association)
"""

from __future__ import annotations

from backend import catalog
from backend.commands._common import add_model_args, ensure_runs, model_for_set
from backend.errors import LayerScopeError
from backend.views import dictionaries
from backend.views import features as FV

HELP = "sparse dictionaries (TopK SAEs) of a layer: train, export, import, browse features"
ACTIONS = ("browse", "train", "export", "import")


def register(p) -> None:
    p.add_argument(
        "action",
        nargs="?",
        default="browse",
        choices=ACTIONS,
        help="train a dictionary, export / import one (SAELens layout), or browse (default)",
    )
    add_model_args(p, need_set=False)
    p.add_argument("--set", dest="set_name", help="prompt set (not for import)")
    p.add_argument("--layer", type=int, required=True, help="0 = embeddings, L = after block L")
    p.add_argument("--latents", type=int, default=256, help="dictionary size (train; lookup)")
    p.add_argument("--k", type=int, default=8, help="active latents per token (train; lookup)")
    p.add_argument("--seed", type=int, default=0, help="init, batch order and train/held-out split")
    p.add_argument("--imported", action="store_true", help="use the imported dictionary")
    p.add_argument("--feature", type=int, help="browse: the feature to detail")
    p.add_argument("--sort", default="auroc", choices=FV.SORTS, help="browse: order of latents")
    p.add_argument("--top", type=int, default=10, help="browse: contexts shown")
    p.add_argument(
        "--probe-k", type=int, default=8, help="browse: latents of the sparse probe (0: none)"
    )
    p.add_argument(
        "--logit-effects", action="store_true", help="browse: load the model for logit effects"
    )
    p.add_argument(
        "--splice",
        action="store_true",
        help="train / browse: load the model; next-token loss with the reconstruction spliced in"
        " vs clean vs mean-ablated (loss recovered), on held-out prompts",
    )
    p.add_argument("--out", help="export: output folder")
    p.add_argument("--from", dest="src", help="import: an SAELens-layout folder")


def _settings(args) -> dict:
    return {"latents": args.latents, "k": args.k, "seed": args.seed}


def run(args, store) -> dict:
    if args.action == "import":
        if not args.src:
            raise LayerScopeError("features import needs --from DIR (cfg.json + safetensors).")
        model_id = catalog.model_id_for(store, args.model or "demo")
        d = dictionaries.import_saelens(store, model_id, args.layer, args.src)
        return {"action": "import", "model": args.model, **d.summary()}
    if not args.set_name:
        raise LayerScopeError(f"features {args.action} needs --set NAME.")
    args.model = model_for_set(store, args)
    model_id, _ = ensure_runs(store, args)
    if args.action == "train":
        d = dictionaries.train(store, model_id, args.set_name, args.layer, **_settings(args))
        out = {"action": "train", "model": args.model, **d.summary()}
        if args.splice:
            out["splice"] = dictionaries.splice(store, d, _model(args), args.set_name)
        return out
    if args.action == "export":
        if not args.out:
            raise LayerScopeError("features export needs --out DIR.")
        d = _require(store, model_id, args)
        out = dictionaries.export_saelens(d, args.out)
        return {"action": "export", "out": str(out), **d.summary()}
    req = FV.Request(
        model_id=model_id,
        set_name=args.set_name,
        layer=args.layer,
        imported=args.imported,
        feature=args.feature,
        sort=args.sort,
        top=args.top,
        probe_k=args.probe_k,
        **_settings(args),
    )
    lm = _model(args) if args.logit_effects or args.splice else None
    if args.splice:
        dictionaries.splice(store, _require(store, model_id, args), lm, args.set_name)
    return {"action": "browse", "model": args.model, **FV.compute(store, req, lm=lm).to_dict()}


def _model(args):
    from backend import models

    return models.get_model(args.model, args.dtype, args.device, args.trust_remote_code)


def _require(store, model_id: str, args):
    if args.imported:
        return dictionaries.require(store, model_id, args.layer, None)
    return dictionaries.require(store, model_id, args.layer, args.set_name, **_settings(args))


def _quality(r: dict) -> str:
    if r.get("fvu") is None:
        return f"{r['latents']} latents, k = {r['k']} (imported from {r.get('from')})"
    return (
        f"{r['latents']} latents, k = {r['k']}, seed {r['seed']}: held-out FVU {r['fvu']:.4f}, "
        f"mean L0 {r['l0']:.2f}, dead fraction {r['dead_fraction']:.3f} "
        f"({r['n_heldout_tokens']:,} held-out tokens; trained on {r['n_train_tokens']:,} "
        f"tokens, {r['steps']} steps, {r['seconds']:.1f} s)"
    )


def _splice(s: dict | None) -> str:
    if not s:
        return ""
    rec = "n/a" if s["loss_recovered"] is None else f"{s['loss_recovered']:.3f}"
    return (
        f"\nnext-token loss on {s['n_prompts']} held-out prompts ({s['n_tokens']} tokens): "
        f"clean {s['clean']:.4f}, spliced {s['spliced']:.4f}, mean-ablated "
        f"{s['mean_ablated']:.4f}; loss recovered {rec}"
    )


def prose(r: dict) -> str:
    a = r["action"]
    if a in ("train", "import"):
        return f"layer {r['layer']} ({r['hook_name']}): {_quality(r)}{_splice(r.get('splice'))}"
    if a == "export":
        return f"wrote {r['out']} (cfg.json, sae_weights.safetensors): {_quality(r)}"
    d = r["dictionary"]
    lines = [
        f"layer {d['layer']}: {_quality(d)}{_splice(d.get('splice'))}",
        f"latents by {d.get('sorted_by', r['sort'])} (first 15):",
    ]
    lines.append("latent  density  max act  AUROC  label")
    for row in r["latents"][:15]:
        au = "    -" if row["auroc"] is None else f"{row['auroc']:.3f}"
        lines.append(
            f"{row['latent']:>6}  {row['density']:7.4f}  {row['max_act']:7.3f}  {au}  "
            f"{row['auroc_label'] or ''}"
        )
    sp = r.get("sparse_probe")
    if sp and "skipped" in sp:
        lines.append(f"sparse probe: none ({sp['skipped']})")
    elif sp:
        lines.append(
            f"sparse probe on {len(sp['latents'])} latents {sp['latents']} (chosen by AUROC on "
            f"{sp['n_selection_prompts']} training prompts), {sp['method']}, {sp['folds']}-fold "
            f"on {sp['n_eval_prompts']} held-out prompts: accuracy {sp['accuracy']:.3f} "
            f"[{sp['interval'][0]:.3f}, {sp['interval'][1]:.3f}], shuffled-label control "
            f"{sp['control']:.3f}, majority {sp['majority']:.3f}"
        )
    f = r.get("feature")
    if f:
        lines.append(f"feature {f['id']}: density {f['density']:.4f}, max {f['max_act']:.3f}")
        for label, (v, lo, hi) in f["auroc"].items():
            lines.append(f"  AUROC {label} vs rest (last token): {v:.3f} [{lo:.3f}, {hi:.3f}]")
        for c in f["contexts"]:
            lines.append(
                f"  {c['activation']:7.3f}  {c['token']!r} (pos {c['pos']}) in {c['text']!r}"
            )
        if "logit_effects" in f:
            e = f["logit_effects"]
            lines.append(f"  logit effects, {e['method']}:")
            lines.append("    up:   " + ", ".join(f"{t!r} {v:+.2f}" for t, v in e["top"]))
            lines.append("    down: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in e["bottom"]))
    if r.get("notice"):
        lines.append(r["notice"])
    return "\n".join(lines)
