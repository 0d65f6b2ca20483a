"""Sampled generations with every layer captured, using the KV cache (no prefix re-runs).

N samples of one prompt run as one batch (same length: no padding). Sample i draws from its
own generator seeded with ``seed + i``, so a sample is reproducible whatever N is. Each sample
becomes a run of kind 'generation' (prompt + generated tokens, cut after <eos>), cached by
(model, prompt, sampling settings, seed).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from backend import extract, models
from backend.errors import LayerScopeError
from backend.worker import JOB_KINDS, JobContext


@dataclass(frozen=True)
class Sampling:
    samples: int = 8
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def key(self) -> dict:  # what changes one sample's run (not how many samples were asked)
        d = asdict(self)
        d.pop("samples")
        return d

    def validate(self) -> None:
        if self.samples < 1 or self.max_new_tokens < 1:
            raise LayerScopeError("Ask for at least one sample and one new token.")
        if self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise LayerScopeError("Temperature must be > 0 and top-p in (0, 1].")


def sample_run_id(model_id: str, text: str, s: Sampling, i: int, dtype: str) -> str:
    return extract.make_run_id(model_id, text, {**s.key(), "sample": i, "dtype": dtype},
                               kind="generation")


def request_id(model_id: str, text: str, s: Sampling, dtype: str) -> str:
    return extract.make_run_id(model_id, text, {**s.key(), "dtype": dtype}, kind="request")


def _sample(logits: torch.Tensor, s: Sampling, gens: list[torch.Generator]) -> torch.Tensor:
    probs = torch.softmax(logits.float() / s.temperature, -1)
    if s.top_p < 1:
        sp, si = probs.sort(-1, descending=True)
        keep = sp.cumsum(-1) - sp < s.top_p
        sp = sp * keep
        probs = torch.zeros_like(probs).scatter(-1, si, sp)
        probs = probs / probs.sum(-1, keepdim=True)
    return torch.stack([torch.multinomial(p, 1, generator=g)[0] for p, g in zip(probs, gens)])


def generate(lm: models.LoadedModel, text: str, s: Sampling, samples: list[int] | None = None
             ) -> list[extract.CapturedRun]:
    """Sample the continuations ``samples`` (default all) of ``text`` and capture every layer."""
    if not lm.info.is_causal:
        raise LayerScopeError(f"{lm.info.ref} is not a causal language model: it cannot generate.")
    s.validate()
    samples = list(range(s.samples)) if samples is None else samples
    tok = lm.tokenizer
    prompt = extract.tokenize(tok, [text])[0]
    n = len(samples)
    gens = [torch.Generator().manual_seed(s.seed + i) for i in samples]
    ids = torch.tensor([prompt.ids] * n, device=lm.device)
    dtype = str(lm.dtype).removeprefix("torch.")
    chunks: list[list[torch.Tensor]] = []
    new_tokens = []
    with torch.inference_mode(), extract.ResidualRecorder(lm) as rec:
        out = lm.model(input_ids=ids, use_cache=True)
        chunks.append([st.clone() for st in rec.states])
        for _ in range(s.max_new_tokens):
            nxt = _sample(out.logits[:, -1], s, gens)
            new_tokens.append(nxt)
            out = lm.model(input_ids=nxt[:, None], past_key_values=out.past_key_values,
                           use_cache=True)
            chunks.append([st.clone() for st in rec.states])
    states = [torch.cat([c[layer] for c in chunks], 1) for layer in range(len(chunks[0]))]
    gen = torch.stack(new_tokens, 1).tolist()  # (n, max_new)
    eos = tok.eos_token_id
    parent = request_id(lm.info.model_id, text, s, dtype)
    runs = []
    for row, i in enumerate(samples):
        g = gen[row]
        cut = g.index(eos) + 1 if eos in g else len(g)
        all_ids = prompt.ids + g[:cut]
        hidden = torch.stack([st[row, : len(all_ids)] for st in states])
        special = prompt.special + [t in set(tok.all_special_ids) for t in g[:cut]]
        runs.append(extract.CapturedRun(
            run_id=sample_run_id(lm.info.model_id, text, s, i, dtype), text=text,
            token_ids=all_ids, tokens=extract.decode_tokens(tok, all_ids),
            offsets=prompt.offsets + [(-1, -1)] * cut, special=special, hidden=hidden,
            kind="generation", settings={**s.key(), "sample": i, "dtype": dtype},
            n_prompt_tokens=len(prompt.ids), parent=parent, sample=i, seed=s.seed + i))
    return runs


def run_generate(ctx: JobContext) -> dict:
    """Job handler: options = Sampling fields; computes only the samples not cached."""
    store, spec, p = ctx.store, ctx.spec, ctx.progress
    s = Sampling(**{k: v for k, v in spec.options.items() if k in Sampling.__dataclass_fields__})
    s.validate()
    mref = models.resolve(spec.model)
    dtype = str(models.pick_dtype(spec.dtype, spec.device)).removeprefix("torch.")
    texts = list(dict.fromkeys(store.get_set(spec.set_name)["text"]))
    if spec.options.get("prompts"):
        texts = [t for t in texts if t in set(spec.options["prompts"])]
    if not texts:
        raise LayerScopeError(f"No prompts to sample in '{spec.set_name}'.")
    todo = []
    for t in texts:
        ids = [sample_run_id(mref.model_id, t, s, i, dtype) for i in range(s.samples)]
        have = store.existing_runs(ids)
        missing = [i for i, rid in enumerate(ids) if rid not in have]
        if missing:
            todo.append((t, missing))
    p.runs_total = len(texts) * s.samples
    p.runs_cached = p.runs_total - sum(len(m) for _, m in todo)
    p.tokens_total = sum(len(m) for _, m in todo) * s.max_new_tokens
    result = {"set": spec.set_name, "model_id": mref.model_id, "runs": 0,
              "cached_runs": p.runs_cached, "tokens": 0, "prompts": len(texts)}
    if not todo:
        return result
    lm = models.get_model(spec.model, spec.dtype, spec.device, spec.trust_remote_code)
    store.upsert_model(lm.info)
    t0 = time.monotonic()
    for text, missing in todo:
        if ctx.should_stop():
            break
        runs = generate(lm, text, s, missing)
        store.ingest(lm.info.model_id, runs)
        p.runs_done += len(runs)
        p.tokens_done += len(missing) * s.max_new_tokens
        ctx.report()
    store.record_throughput(mref.model_id, f"gen:{dtype}",
                            p.tokens_done / max(time.monotonic() - t0, 1e-6))
    result.update(runs=p.runs_done, tokens=p.tokens_done)
    return result


JOB_KINDS["generate"] = run_generate
