"""Sampled generations with every layer captured, using the KV cache (the prefix runs once).

The N samples of one prompt run as one batch: they share the prompt, so no padding is needed.
The prompt is read once (``use_cache``), then each step feeds one token per sample, and the
``ResidualRecorder`` hooks write the new position's state of every layer into a preallocated
buffer. Sample i draws from its own ``torch.Generator`` seeded with
:func:`sample_seed` (base seed, prompt text, i): a stable hash, so a sample is the same
whether it is drawn alone or among N, and sample i of two different prompts does not share
its random stream (with ``seed + i`` it did: same-index samples of different prompts shared
their first token 44% of the time instead of 7.6%, which inflated outcome separation). Each sample becomes a run of kind
'generation' (prompt + generated tokens, cut after <eos>), identified by (model, prompt,
sampling settings, seed, sample index): asking again costs nothing.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

import torch

from backend import models
from backend.capture import extract
from backend.errors import LayerScopeError
from backend.records import GEN_VERSION, Sampling, request_id, sample_run_id, sample_seed

log = logging.getLogger(__name__)
__all__ = [
    "GEN_VERSION",
    "Sampling",
    "generate",
    "request_id",
    "sample_next",
    "sample_run_id",
    "sample_seed",
]


def sample_next(logits: torch.Tensor, s: Sampling, gens: list[torch.Generator]) -> torch.Tensor:
    """One token per row of logits (n, vocab), row i drawn with generator i."""
    probs = torch.softmax(logits.float() / s.temperature, -1)
    if s.top_p < 1:
        sp, si = probs.sort(-1, descending=True)
        sp = sp * (sp.cumsum(-1) - sp < s.top_p)  # keep tokens until the mass reaches top_p
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
    return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, gens)])


def max_positions(lm: models.LoadedModel) -> int | None:
    cfg = lm.model.config
    for name in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(cfg, name, None), int):
            return getattr(cfg, name)
    return None


def _forward(lm: models.LoadedModel, ids: torch.Tensor, past=None):
    """One forward step with the KV cache. transformers >= 5.2x calls the cache argument and
    output ``cache`` (``past_key_values`` is deprecated); older 5.x releases use the old name."""
    params = inspect.signature(lm.model.forward).parameters
    kw = {"input_ids": ids, "use_cache": True}
    kw["cache" if "cache" in params else "past_key_values"] = past
    if "logits_to_keep" in params:
        kw["logits_to_keep"] = 1  # the prefix needs the last position's logits only
    return lm.model(**kw)


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def generate(
    lm: models.LoadedModel,
    text: str,
    s: Sampling,
    samples: list[int] | None = None,
    should_stop: Callable[[], bool] | None = None,
    exact: bool = False,
) -> list[extract.CapturedRun]:
    """Sample continuations ``samples`` (default 0..N-1) of ``text``, every layer captured.

    Returns one CapturedRun per sample: hidden (n_layers + 1, n_prompt + n_generated, d_model)
    as numpy in storage precision (``extract.to_storage``; float32 with ``exact``); an empty
    list if ``should_stop`` fired.
    """
    if not lm.info.is_causal:
        raise LayerScopeError(f"{lm.info.ref} is not a causal language model: it cannot generate.")
    s.validate()
    samples = list(range(s.samples)) if samples is None else list(samples)
    tok = lm.tokenizer
    prompt = extract.tokenize(tok, [text])[0]
    n_p = len(prompt.ids)
    limit = max_positions(lm)
    n_new = s.max_new_tokens if limit is None else min(s.max_new_tokens, limit - n_p)
    if n_new < 1:
        raise LayerScopeError(
            f"The prompt has {n_p} tokens and {lm.info.ref} reads at most {limit}: "
            "there is no room to generate."
        )
    n = len(samples)
    seeds = [sample_seed(s.seed, text, i) for i in samples]
    gens = [torch.Generator(device=lm.device).manual_seed(v) for v in seeds]
    eos = tok.eos_token_id
    new = torch.zeros((n, n_new), dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    n_steps = 0
    with torch.inference_mode(), extract.ResidualRecorder(lm) as rec:
        out = _forward(lm, torch.tensor([prompt.ids] * n, device=lm.device))
        d = rec.states[0].shape[-1]
        buf = torch.empty((len(rec.states), n, n_p + n_new, d), dtype=rec.states[0].dtype)
        for layer, st in enumerate(rec.states):
            buf[layer, :, :n_p] = st
        for k in range(n_new):
            if should_stop is not None and should_stop():
                return []
            nxt = sample_next(out.logits[:, -1], s, gens)
            new[:, k] = nxt.cpu()
            if eos is not None:
                done |= new[:, k] == eos
            out = _forward(lm, nxt[:, None], _cache_of(out))
            for layer, st in enumerate(rec.states):
                buf[layer, :, n_p + k] = st[:, -1]
            n_steps = k + 1
            if done.all():
                break
    dtype = str(lm.dtype).removeprefix("torch.")
    parent = request_id(lm.info.model_id, text, s, dtype)
    special_ids = set(tok.all_special_ids)
    capped = n_new < s.max_new_tokens
    runs = []
    for row, i in enumerate(samples):
        g = new[row, :n_steps].tolist()
        cut = g.index(eos) + 1 if eos in g else len(g)
        ids = prompt.ids + g[:cut]
        runs.append(
            extract.CapturedRun(
                run_id=sample_run_id(lm.info.model_id, text, s, i, dtype),
                text=text,
                token_ids=ids,
                tokens=extract.decode_tokens(tok, ids),
                offsets=prompt.offsets + [(-1, -1)] * cut,
                special=prompt.special + [t in special_ids for t in g[:cut]],
                hidden=extract.to_storage(buf[:, row, : len(ids)], exact),
                truncated=capped and cut == len(g),
                kind="generation",
                settings={**s.key(), "sample": i, "dtype": dtype},
                n_prompt_tokens=n_p,
                parent=parent,
                sample=i,
                seed=seeds[row],
            )
        )
    return runs
