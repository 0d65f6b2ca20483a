"""The Patching view's forwards: the clean and corrupted runs, every (layer, position) cell
patched (exact) or estimated (AtP), pairs of a set averaged, one cell's distribution.
``views.patching`` holds the Request, the Result and the cache; this module runs the model
(its torch code lives in ``capture.patching``)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from backend.errors import LayerScopeError
from backend.store import Store
from backend.views.patching import (
    MIN_PAIRS,
    CellDistribution,
    Request,
    Result,
    _cells,
    set_pairs,
    token_id,
)


def _model(req: Request, lm):
    from backend import models

    if lm is None:
        lm = models.get_model(req.model, req.dtype, req.device)
    if not lm.info.has_lm_head or lm.unembed is None:
        raise LayerScopeError(
            f"Patching reads the next-token logits; {lm.info.ref} has no language-model head."
        )
    return lm


def _tokenize_pair(lm, clean: str, corrupted: str):
    from backend import models
    from backend.capture import extract

    limit = models.max_positions(lm.model.config.to_dict())
    clean_tk, corr_tk = extract.tokenize(lm.tokenizer, [clean, corrupted], limit)
    if len(clean_tk.ids) != len(corr_tk.ids) or clean_tk.truncated or corr_tk.truncated:
        raise LayerScopeError(
            f"The clean prompt has {clean_tk.n_full} tokens and the corrupted one "
            f"{corr_tk.n_full}; patching needs the same number of tokens"
            + (f" (at most {limit})." if clean_tk.truncated or corr_tk.truncated else ".")
        )
    return list(clean_tk.ids), list(corr_tk.ids)


def _clean_values(store: Store, lm, req: Request, clean: str, clean_ids):
    """(values (n_layers + 1, T, d) to copy from, last-position clean logits, source).

    Always a forward pass of the clean prompt in the model's own precision, like the patched
    forwards: the store's fp16 copy of the run would make the clean reference (and so every
    recovery) depend on whether the prompt happened to be extracted."""
    from backend.capture import patching as P

    if req.component != "resid":
        values = P.component_outputs(lm, clean_ids, req.component)
        _, _, last = P.run_plain(lm, clean_ids)
        return values, last, "computed"
    states, _, last = P.run_plain(lm, clean_ids)
    return states, last, "computed"


#: recovery = (patched - corrupted) / (clean - corrupted) is ill-conditioned below these:
#: logit-diff, a share of the clean logits' spread (SD over the vocabulary) or an absolute
#: floor in logits; prob, an absolute floor in probability
SMALL_SHARE, SMALL_LOGIT, SMALL_PROB = 0.05, 0.05, 0.01


def small_gap(metric: str, clean_m: float, corr_m: float, logits_sd: float) -> float | None:
    """The threshold |clean - corrupted| falls under (recovery means little), or None."""
    gap = abs(clean_m - corr_m)
    limit = SMALL_PROB if metric == "prob" else max(SMALL_SHARE * logits_sd, SMALL_LOGIT)
    return limit if gap < limit else None


def _warning(res: Result, pairs: list[Result] | None = None) -> str | None:
    if pairs is None:
        if res.small_gap is None:
            return None
        return (
            f"The clean and corrupted metrics differ by only "
            f"{abs(res.clean_metric - res.corrupted_metric):.4g} (under {res.small_gap:.3g}, "
            + ("a probability floor" if res.metric == "prob" else
               f"{SMALL_SHARE:.0%} of the clean logits' spread or {SMALL_LOGIT} logits")
            + "): recovery divides by that difference, so its values mean little here."
        )  # fmt: skip
    bad = [r for r in pairs if r.small_gap is not None]
    if not bad:
        return None
    return (
        f"{len(bad)} of {len(pairs)} pairs have clean and corrupted metrics closer than the "
        "recovery needs (under 5% of the clean logits' spread or an absolute floor): their "
        "recoveries are ill-conditioned and weigh on the mean."
    )


def _one(
    store: Store, req: Request, lm, clean: str, corrupted: str, ids=None, verify: bool = False
) -> Result:
    """One pair's map (``clean`` / ``corrupted`` may be a set's pair, not the typed one);
    ``verify``: with ``req.verify``, AtP's top cells patched exactly (``Result.agreement``)."""
    from backend.capture import extract
    from backend.capture import patching as P
    from backend.views.lens import decode

    clean_ids, corr_ids = ids or _tokenize_pair(lm, clean, corrupted)
    layers, positions = _cells(req, lm.info.n_layers, len(clean_ids))
    if req.component == "feature":  # the clean run's own states, latent F ablated at the layer
        from backend.capture.features import ablated_states
        from backend.views.dictionaries import latent_ablation

        fn = latent_ablation(store, lm.info.model_id, layers[0], req.set_name, req.feature)
        values, clean_outs, clean_last, clean_states = ablated_states(lm, clean_ids, layers[0], fn)
        clean_source = "computed"
    else:
        values, clean_last, clean_source = _clean_values(store, lm, req, clean, clean_ids)
    if req.method == "atp":  # its differentiable corrupted run is the only corrupted pass
        corr_grad, corr_acts = P.atp_forward(lm, corr_ids, req.component)
        corr_last = corr_grad.detach()
    else:
        corr_states, corr_outputs, corr_last = P.run_plain(lm, corr_ids)
        if req.component in ("attn", "mlp"):
            corr_states = P.component_outputs(lm, corr_ids, req.component)

    tok = lm.tokenizer
    answer = token_id(tok, req.answer) if req.answer else int(clean_last.float().argmax())
    against = token_id(tok, req.against) if req.against else int(corr_last.float().argmax())
    names = decode(lm, [answer, against])
    if answer == against and req.metric == "logit-diff":
        raise LayerScopeError(
            f"The answer and the against token are the same ({names[answer]!r}): the clean and "
            "corrupted prompts have the same top-1 next token; name two tokens "
            "(--answer and --against)."
        )
    ro_clean = P.readout(clean_last[None], answer, against, req.top_k)
    ro_corr = P.readout(corr_last[None], answer, against, req.top_k)
    pick = (lambda ro: ro.prob) if req.metric == "prob" else (lambda ro: ro.metric)
    clean_m, corr_m = float(pick(ro_clean)[0]), float(pick(ro_corr)[0])
    if abs(clean_m - corr_m) < 1e-6:
        what = f"p({names[answer]!r})" if req.metric == "prob" else (
            f"logit({names[answer]!r}) - logit({names[against]!r})")  # fmt: skip
        raise LayerScopeError(
            f"The metric {what} is the same after both prompts ({clean_m:.4f}): nothing to recover."
        )
    gap = small_gap(req.metric, clean_m, corr_m, float(clean_last.float().std()))
    cells = [(layer, p) for layer in layers for p in positions]
    agreement = None
    if req.method == "atp":  # one backward for every cell; no patched distributions
        est = P.atp_estimate(corr_grad, corr_acts, values, cells, answer, against, req.metric)
        none = np.zeros((len(cells), 0))
        ro = P.Readout(metric=est, top_ids=none.astype(np.int64), top_probs=none, prob=est)
        if verify and req.verify:
            top = np.argsort(-np.abs(est - corr_m), kind="stable")[: req.verify]
            ex = pick(P.patch_cells(lm, corr_ids, values, [cells[i] for i in top], answer,
                                    against, 1, component=req.component))  # fmt: skip
            agreement = P.agreement([cells[i] for i in top], est[top], ex, clean_m, corr_m)
    elif req.component == "feature":  # "patch" the ablated states into the clean run itself
        ro = P.patch_cells(lm, clean_ids, values, cells, answer, against, req.top_k,
                           corrupted_outputs=clean_outs, corrupted_values=clean_states,
                           corrupted_logits=clean_last)  # fmt: skip
    else:
        ro = P.patch_cells(lm, corr_ids, values, cells, answer, against, req.top_k,
                           corrupted_outputs=corr_outputs, component=req.component,
                           corrupted_values=corr_states, corrupted_logits=corr_last)  # fmt: skip
    nl, npos, k = len(layers), len(positions), ro.top_ids.shape[1]
    names = decode(lm, ro.top_ids)
    top_tokens = [
        [[names[int(i)] for i in ro.top_ids[li * npos + pi]] for pi in range(npos)]
        for li in range(nl)
    ]
    return Result(
        request=req,
        layers=layers,
        positions=positions,
        tokens=extract.decode_tokens(tok, clean_ids),
        corrupted_tokens=extract.decode_tokens(tok, corr_ids),
        answer=decode(lm, [answer])[answer],
        against=decode(lm, [against])[against],
        clean_metric=clean_m,
        corrupted_metric=corr_m,
        patched=pick(ro).reshape(nl, npos),
        top_tokens=top_tokens,
        top_probs=ro.top_probs.reshape(nl, npos, k),
        clean_source=clean_source,
        metric=req.metric,
        component=req.component,
        method=req.method,
        agreement=agreement,
        small_gap=gap,
    )


def _differs(a, b) -> tuple[int, ...]:
    return tuple(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


def _compute(store: Store, req: Request, lm) -> Result:
    lm = _model(req, lm)
    typed_ids = _tokenize_pair(lm, req.clean, req.corrupted)
    first = _one(store, req, lm, req.clean, req.corrupted, typed_ids, verify=True)
    if not req.pairs:
        return replace(first, warning=_warning(first))
    # the set's pairs aligned with the typed one: same token count, same differing positions
    shape = (len(typed_ids[0]), _differs(*typed_ids))
    results, texts, skipped = [first], [(req.clean, req.corrupted)], 0
    for clean, corrupted in set_pairs(req.set_name):
        if (clean, corrupted) == (req.clean, req.corrupted):
            continue
        try:
            ids = _tokenize_pair(lm, clean, corrupted)
        except LayerScopeError:
            continue
        if (len(ids[0]), _differs(*ids)) != shape:
            continue
        try:
            results.append(_one(store, req, lm, clean, corrupted, ids))
        except LayerScopeError:  # same top-1 token or nothing to recover in this pair
            skipped += 1
            continue
        texts.append((clean, corrupted))
    if len(results) < MIN_PAIRS:
        raise LayerScopeError(
            f"No pair of the set '{req.set_name}' lines up with the typed one (same number of "
            f"tokens, {shape[0]}, and the same differing positions, {list(shape[1])}); type a "
            "pair shaped like the set's, e.g. 'the cat near the dogs often' / 'the cats near "
            "the dog often' for agreement."
        )
    # logit-diff: each pair signed towards its own clean answer (a probability is not signed)
    signs = [1 if req.metric == "prob" or r.clean_metric >= 0 else -1 for r in results]
    return Result(
        **{k: getattr(first, k) for k in ("request", "layers", "positions", "tokens",
                                          "corrupted_tokens", "answer", "against", "top_tokens",
                                          "top_probs", "clean_source", "metric", "component",
                                          "method", "agreement")},
        clean_metric=float(np.mean([s * r.clean_metric for s, r in zip(signs, results)])),
        corrupted_metric=float(np.mean([s * r.corrupted_metric for s, r in zip(signs, results)])),
        patched=np.mean([s * r.patched for s, r in zip(signs, results)], axis=0),
        pair_recovery=np.stack([r.recovery for r in results]),
        pair_texts=texts,
        pair_metrics=[(s * r.clean_metric, s * r.corrupted_metric)
                      for s, r in zip(signs, results)],
        n_skipped=skipped,
        pair_signs=signs,
        warning=_warning(first, results),
    )  # fmt: skip


def cell_distribution(
    store: Store | None, req: Request, layer: int, position: int, k: int = 10, lm=None
) -> CellDistribution:
    """The typed pair's corrupted prompt with the one cell (layer, position) patched: its
    next-token distribution (top ``k``) against the clean and corrupted runs'. One forward
    pass (plus the clean and corrupted ones): computed on a click, not for every cell."""
    from backend.capture import patching as P
    from backend.views.lens import decode

    if req.component == "feature":
        raise LayerScopeError("A cell's distribution is for patched cells, not feature ablation.")
    lm = _model(req, lm)
    clean_ids, corr_ids = _tokenize_pair(lm, req.clean, req.corrupted)
    _cells(replace(req, layers=(layer,), positions=(position,)), lm.info.n_layers, len(clean_ids))
    values, clean_last, _ = _clean_values(store, lm, req, req.clean, clean_ids)
    _, _, corr_last = P.run_plain(lm, corr_ids)
    patched = P.cell_logits(lm, corr_ids, values, layer, position, req.component)
    probs = [x.float().softmax(-1).cpu().numpy() for x in (patched, clean_last, corr_last)]
    ids = list(np.argsort(-probs[0])[:k])
    for p in probs[1:]:
        if int(p.argmax()) not in ids:
            ids.append(int(p.argmax()))
    ids = sorted(ids, key=lambda i: -probs[0][i])
    names = decode(lm, ids)
    return CellDistribution(
        layer=layer,
        position=position,
        component=req.component,
        tokens=[names[int(i)] for i in ids],
        patched=probs[0][ids].astype(np.float64),
        clean=probs[1][ids].astype(np.float64),
        corrupted=probs[2][ids].astype(np.float64),
    )
