"""Group a model's sampled runs by prompt and compute commitment and consistency."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from backend.analysis.commitment import Commitment, commitment, consistency
from backend.store import Store


@dataclass
class PromptSamples:
    text: str
    run_ids: list[str]
    generated: list[list[str]]  #: generated tokens per run
    outcomes: list[str]
    commitment: Commitment | None
    states: np.ndarray  #: (n_runs, n_layers, n_steps, d)

    @property
    def consistency(self) -> float:
        return consistency(self.outcomes)


def outcome_of(tokens: list[str], regex: str | None) -> str:
    text = " ".join(t.strip() for t in tokens)
    if regex:
        m = re.search(regex, text)
        return m.group(1) if m and m.groups() else (m.group(0) if m else "(none)")
    return tokens[0].strip() if tokens else "(none)"


def prompt_samples(store: Store, model_id: str, settings: dict, texts: list[str] | None = None,
                   regex: str | None = None, max_steps: int = 16) -> list[PromptSamples]:
    runs = store.generation_runs(model_id, settings)
    if texts is not None:
        runs = runs[runs["text"].isin(texts)]
    out = []
    for text, grp in runs.groupby("text", sort=False):
        if len(grp) < 2:
            continue
        gen, states = [], []
        n_steps = min(max_steps, int((grp["n_tokens"] - grp["n_prompt_tokens"]).min()))
        n_steps = max(n_steps, 1)
        for r in grp.itertuples():
            toks = store.tokens(r.run_id)["token"].tolist()
            gen.append(toks[r.n_prompt_tokens:])
            h = store.run_layers(r.run_id)
            start = r.n_prompt_tokens - 1
            states.append(h[:, start:start + n_steps])
        st = np.stack(states)
        out.append(PromptSamples(text, grp["run_id"].tolist(), gen,
                                 [outcome_of(g, regex) for g in gen], None, st))
    if not out:
        return out
    # Centre each layer on the mean state of every sampled run shown: raw residual streams
    # share a large common direction (anisotropy, massive activations) that makes every
    # cosine look like 1. Centring on a global mean (not on the prompt's own runs) keeps the
    # comparison between prompts fair.
    mean = np.concatenate([it.states.reshape(-1, *it.states.shape[1:2], it.states.shape[-1])
                           .transpose(1, 0, 2).reshape(it.states.shape[1], -1,
                                                       it.states.shape[-1])
                           for it in out], axis=1).mean(1)  # (n_layers, d)
    for it in out:
        it.states = it.states - mean[None, :, None, :]
        it.commitment = commitment(it.states, it.generated)
    return out


def summary_table(items: list[PromptSamples], labels: dict[str, str] | None = None,
                  layer: int = -1, step: int = 0) -> pd.DataFrame:
    return pd.DataFrame([{
        "prompt": it.text, "label": (labels or {}).get(it.text),
        "commitment": it.commitment.similarity[layer, min(step, it.commitment.similarity.shape[1] - 1)],
        "consistency": it.consistency, "divergence_step": it.commitment.divergence_step,
        "runs": len(it.run_ids)} for it in items])
