"""Steered runs stored as ordinary prompt runs (``steer --store-runs``, the Steering page's
button): one prompt set per α, so Trajectories and every other view show steered next to
plain generation. Part of the Steering feature (``views/steering.py`` computes the flips)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backend.records import CapturedRun
from backend.store import Store
from backend.views.steering import DIRECTIONS, Request, _inputs


@dataclass
class SteeredRun(CapturedRun):
    """A steered generation as a prompt run, under a prompt id of its own."""

    steer_prompt_id: str = ""

    @property
    def prompt_id(self) -> str:
        return self.steer_prompt_id


def steered_set_name(set_name: str | None, layer: int, direction: str, alpha: float) -> str:
    """``<set>+steer(L2 means 4)``: the prompt set of one α's steered runs."""
    kind = direction if direction in DIRECTIONS else "npy"
    if direction.startswith("feature:"):
        kind = direction.replace(":", " ")
    base = (set_name or "typed")[:32]
    return f"{base}+steer(L{layer} {kind} {alpha:g})"


def _check_store_budget(store: Store, lm, prompts, n_alphas: int, max_new: int) -> None:
    """Refuse, before generating, steered runs over LAYERSCOPE_MAX_JOB_GB (or the free disk),
    as extract does: every α's run of every prompt keeps every layer."""
    from backend.budget import Budget, Estimate, check_budget

    n_tok = sum(len(lm.tokenizer(p)["input_ids"]) + max_new for p in prompts) * n_alphas
    size = n_tok * (lm.info.n_layers + 1) * lm.info.d_model * 2
    check_budget(store, Estimate(len(prompts) * n_alphas, 0, n_tok, size, 0, None, 0), Budget())


def store_runs(store: Store, req: Request, lm=None) -> dict[float, str]:
    """The request's steered generations (the direction, every α; not the control) stored as
    ordinary prompt runs with every layer, one prompt set per α; returns {α: set name}.

    A run's text is the prompt followed by its steered continuation, its tokens the prompt's
    and the generated ones, its states those the steered model computed (the steering hook
    runs before the recorder), and its id hashes (model, text, dtype, layer, the direction's
    bytes, α, start, sampling) into the settings, so asking again is a cache hit. Labels and
    groups follow the prompt. α = 0 is plain generation: its runs are the unsteered ones (a
    Trajectories view of the α = 0 set against another α shows steered vs plain). Each run has
    its own prompt id (``steer-<run id>``, the same text), so a set of steered runs shows
    exactly them, and a plain capture of the same text never mixes with them."""
    from backend.capture import extract
    from backend.capture import steering as S

    lm, runs, _, direction, _, prompts, plabels, sampling = _inputs(store, req, lm)
    tok, alphas = lm.tokenizer, list(req.alphas)
    dtype = str(lm.dtype).removeprefix("torch.")
    groups = ([None] * len(prompts) if req.prompts
              else runs.head(req.max_prompts)["group"].tolist())  # fmt: skip
    base = {
        "v": 1,
        "dtype": dtype,
        "steer": {
            "layer": req.layer,
            "direction": req.direction,
            "direction_sha": hashlib.sha256(
                np.asarray(direction, np.float64).tobytes()
            ).hexdigest(),
            "start": req.start,
            "max_new_tokens": req.max_new_tokens,
            "sampling": None if sampling is None else sampling.key(),
        },
    }
    _check_store_budget(store, lm, prompts, len(alphas), req.max_new_tokens)
    rows: dict[float, list] = {a: [] for a in alphas}
    special_ids = set(tok.all_special_ids)
    for text, lab, grp in zip(prompts, plabels, groups):
        captured = []  # this prompt's runs, every α: stored before the next prompt (streamed)
        out = S.steer_generate(lm, text, req.layer, S.unit(direction), alphas,
                               req.max_new_tokens, sampling=sampling, start=req.start,
                               capture=True)  # fmt: skip
        pr = out.prompt
        for a, g, h in zip(alphas, out.new_ids, out.hidden):
            full = text + tok.decode(g, skip_special_tokens=True)
            settings = {**base, "steer": {**base["steer"], "alpha": a}}
            ids = list(pr.ids) + list(g)
            run_id = extract.make_run_id(lm.info.model_id, full, settings)
            captured.append(
                SteeredRun(
                    steer_prompt_id=f"steer-{run_id}",
                    run_id=run_id,
                    text=full,
                    token_ids=ids,
                    tokens=extract.decode_tokens(tok, ids),
                    offsets=list(pr.offsets) + [(-1, -1)] * len(g),
                    special=list(pr.special) + [t in special_ids for t in g],
                    hidden=h,
                    settings=settings,
                    n_prompt_tokens=len(pr.ids),
                )
            )
            rows[a].append({"text": full, "label": lab, "group": grp,
                            "prompt_id": f"steer-{run_id}"})  # fmt: skip
        have = store.existing_runs([r.run_id for r in captured])
        store.ingest(lm.info.model_id, [r for r in captured if r.run_id not in have])
    names = {}
    for a in alphas:
        name = steered_set_name(req.set_name, req.layer, req.direction, a)
        desc = (f"{req.set_name or 'typed prompts'} steered at layer {req.layer} with the "
                f"{req.direction} direction, α = {a:g} (prompt + steered continuation)")  # fmt: skip
        store.save_prompt_set(name, pd.DataFrame(rows[a]), description=desc, source="steering")
        names[a] = name
    return names
