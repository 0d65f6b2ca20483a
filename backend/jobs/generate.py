"""The ``generate`` job: sample the set's prompts with every layer captured (missing samples only)."""

from __future__ import annotations

import time

from backend import models
from backend.budget import Estimate, check_budget
from backend.capture.generate import Sampling, generate, sample_run_id
from backend.errors import LayerScopeError
from backend.jobs.base import JobContext
from backend.jobs.extract import pipelined_ingest


def _plan(store, spec) -> tuple[models.ModelRef, Sampling, str, list[str], list[tuple]]:
    """(model ref, sampling, dtype, prompt texts, [(text, missing sample indices)])."""
    s = Sampling.from_options(spec.options)
    s.validate()
    mref = models.resolve(spec.model)
    dtype = str(models.pick_dtype(spec.dtype, spec.device, model=mref)).removeprefix("torch.")
    texts = list(dict.fromkeys(store.get_set(spec.set_name)["text"]))
    if spec.options.get("prompts") is not None:
        wanted = set(spec.options["prompts"])
        texts = [t for t in texts if t in wanted]
    if not texts:
        raise LayerScopeError(f"No prompts to sample in the set '{spec.set_name}'.")
    ids = {
        t: [sample_run_id(mref.model_id, t, s, i, dtype) for i in range(s.samples)] for t in texts
    }
    have = store.existing_runs([r for v in ids.values() for r in v])
    todo = [(t, [i for i, r in enumerate(v) if r not in have]) for t, v in ids.items()]
    return mref, s, dtype, texts, [(t, m) for t, m in todo if m]


def _estimate(store, mref, s: Sampling, dtype: str, todo: list[tuple]) -> Estimate:
    cfg = models.read_config(mref)
    n_layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0
    d = cfg.get("hidden_size") or cfg.get("n_embd") or 0
    n_tokens = sum(len(m) * (len(t.split()) * 2 + s.max_new_tokens) for t, m in todo)  # rough
    elem = 2 if dtype in ("bfloat16", "float16") else 4
    file_elem = 4 if cfg.get("torch_dtype", cfg.get("dtype")) in (None, "float32") else 2
    rate = store.throughput(mref.model_id, f"gen:{dtype}")
    new = sum(len(m) for _, m in todo) * s.max_new_tokens
    return Estimate(
        runs=0,
        cached_runs=0,
        tokens=new,
        bytes=n_tokens * (n_layers + 1) * d * 2,
        model_bytes=models.weights_bytes(mref) * elem // file_elem,
        seconds=new / rate if rate else None,
        truncated=0,
    )


def run_generate(ctx: JobContext) -> dict:
    """Job handler. spec.options: Sampling fields, optional ``prompts`` (texts of the set to
    sample; default all). Computes only the samples the cache lacks, one transaction per
    prompt, cancellable between steps."""
    store, spec, p = ctx.store, ctx.spec, ctx.progress
    mref, s, dtype, texts, todo = _plan(store, spec)
    p.runs_total = len(texts) * s.samples
    p.runs_cached = p.runs_total - sum(len(m) for _, m in todo)
    p.tokens_total = sum(len(m) for _, m in todo) * s.max_new_tokens
    result = {
        "set": spec.set_name,
        "model": spec.model,
        "model_id": mref.model_id,
        "dtype": dtype,
        "prompts": len(texts),
        "runs": 0,
        "cached_runs": p.runs_cached,
        "tokens": 0,
    }
    if not todo:
        return result
    check_budget(store, _estimate(store, mref, s, dtype, todo), ctx.budget)
    lm = models.get_model(spec.model, spec.dtype, spec.device, spec.trust_remote_code)
    store.upsert_model(lm.info)
    ctx.report(force=True)
    t0 = time.monotonic()

    def batches():
        for text, missing in todo:
            if ctx.should_stop():
                return
            runs = generate(lm, text, s, missing, ctx.should_stop)
            if runs:
                yield runs

    def written(runs) -> None:
        p.runs_done += len(runs)
        p.tokens_done += sum(r.n_tokens - r.n_prompt_tokens for r in runs)
        p.tokens_total -= sum(s.max_new_tokens - (r.n_tokens - r.n_prompt_tokens) for r in runs)
        ctx.report()

    pipelined_ingest(store, lm.info.model_id, batches(), written)
    if p.tokens_done:
        store.record_throughput(
            mref.model_id, f"gen:{dtype}", p.tokens_done / max(time.monotonic() - t0, 1e-6)
        )
    result.update(runs=p.runs_done, tokens=p.tokens_done)
    return result
