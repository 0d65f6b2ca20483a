"""The ``extract`` job: capture the set's missing prompt runs and stream them into the store.

Planning, estimating and checking the inputs are torch-free (``backend.records``,
``capture.sanity``); the capture stack (torch) is imported when a job runs."""

from __future__ import annotations

import logging
import queue
import threading
import time

from backend import models, records
from backend.budget import Estimate
from backend.capture import sanity
from backend.jobs.base import JobContext, JobSpec
from backend.jobs.plan import extract_plan, set_texts
from backend.store import Store

log = logging.getLogger(__name__)
QUEUE_BATCHES = 1  #: converted batches waiting for the writer (each ~165 MB for GPT-2 small)


def token_limit(spec: JobSpec, cfg: dict) -> int | None:
    """Tokens kept per prompt: --max-tokens, capped at the model's position limit (a longer
    input would index past the position embeddings)."""
    limits = [v for v in (spec.max_tokens, models.max_positions(cfg)) if v]
    return min(limits) if limits else None


def estimate(store: Store, spec: JobSpec, texts: list[str] | None = None) -> Estimate:
    """Cost of a job before it runs: tokens, bytes on disk, model memory, time. ``texts``:
    prompts not saved as a set yet (the Run page estimates before anything is written)."""
    mref, settings, texts, missing = extract_plan(store, spec, texts)
    cfg = models.read_config(mref)
    n_layers = cfg.get("num_hidden_layers") or cfg.get("n_layer") or 0
    d = cfg.get("hidden_size") or cfg.get("n_embd") or 0
    toks = []
    if missing:
        tok = models.load_tokenizer(mref.path, spec.trust_remote_code)
        toks = records.tokenize(tok, [t for _, t in missing], token_limit(spec, cfg))
    n_tokens = sum(len(t.ids) for t in toks)
    elem = 2 if settings.dtype in ("bfloat16", "float16") else 4
    file_elem = 4 if cfg.get("torch_dtype", cfg.get("dtype")) in (None, "float32") else 2
    rate = store.throughput(mref.model_id, settings.dtype)
    return Estimate(
        runs=len(texts),
        cached_runs=len(texts) - len(missing),
        tokens=n_tokens,
        bytes=n_tokens * (n_layers + 1) * d * 2,
        model_bytes=models.weights_bytes(mref) * elem // file_elem,
        seconds=n_tokens / rate if rate else None,
        truncated=sum(t.truncated for t in toks),
    )


def check_inputs(store: Store, spec: JobSpec, texts: list[str] | None = None):
    """What the model's tokenizer makes of the set (or of ``texts`` not saved yet): unknown
    tokens, prompts that tokenize identically, truncated and empty prompts, with warnings
    (``capture.sanity.InputSanity``). Tokenizer only: no model load, no forward pass."""
    mref = models.resolve(spec.model)
    texts = set_texts(store, spec, texts)
    cfg = models.read_config(mref)  # a damaged config.json is named as such, before the tokenizer
    tok = models.load_tokenizer(mref.path, spec.trust_remote_code)
    return sanity.check_texts(tok, texts, token_limit(spec, cfg))


def run_extract(ctx: JobContext) -> dict:
    from backend.capture import extract  # torch: only when a job computes

    if ctx.spec.options.get("engine", "local") == "ray":
        from backend.jobs.ray_engine import run_ray_job  # ray: only when asked for

        return run_ray_job(ctx)
    store, spec, p = ctx.store, ctx.spec, ctx.progress
    mref, settings, texts, missing = extract_plan(store, spec, repair=True)
    p.runs_total, p.runs_cached = len(texts), len(texts) - len(missing)
    result = {
        "set": spec.set_name,
        "model": spec.model,
        "model_id": mref.model_id,
        "runs": 0,
        "cached_runs": p.runs_cached,
        "tokens": 0,
        "truncated": 0,
    }
    if not missing:
        return result
    lm = models.get_model(spec.model, spec.dtype, spec.device, spec.trust_remote_code)
    store.upsert_model(lm.info)
    limit = token_limit(spec, models.read_config(mref))
    toks = extract.tokenize(lm.tokenizer, [t for _, t in missing], limit)
    items = [(rid, t) for (rid, _), t in zip(missing, toks) if t.ids]
    empty = [t.text for t in toks if not t.ids]  # a tokenizer that maps a line to nothing
    if empty:
        result["skipped"] = len(empty)
        result["notes"] = [
            f"{len(empty)} prompt(s) have no tokens for this tokenizer and were skipped, "
            f"e.g. {empty[0][:60]!r}"
        ]
    p.tokens_total = sum(len(t.ids) for t in toks)
    result["truncated"] = sum(t.truncated for t in toks)
    if result["truncated"]:
        note = (
            f"{result['truncated']} prompt(s) longer than {limit} tokens were truncated to "
            f"{limit} ("
            + ("--max-tokens" if limit == spec.max_tokens else "the model's maximum")
            + "); each run is flagged"
        )
        result.setdefault("notes", []).append(note)
        log.warning(note)
    ctx.report(force=True)
    t0 = time.monotonic()

    def written(batch) -> None:
        p.runs_done += len(batch)
        p.tokens_done += sum(r.n_tokens for r in batch)
        ctx.report()

    pipelined_ingest(
        store,
        lm.info.model_id,
        extract.capture(lm, items, settings, spec.batch_tokens, ctx.should_stop),
        written,
    )
    if p.tokens_done:
        store.record_throughput(
            mref.model_id, settings.dtype, p.tokens_done / max(time.monotonic() - t0, 1e-6)
        )
    result.update(runs=p.runs_done, tokens=p.tokens_done)
    return result


def pipelined_ingest(store: Store, model_id: str, batches, on_written) -> None:
    """Write batch k to DuckDB on a helper thread while the model computes batch k+1
    (DuckDB and torch both release the GIL). Each batch is still one transaction; an error on
    either side stops both and is raised here. A checkpoint at the end packs the file.

    At most three converted batches exist at once: the one being written, one waiting in the
    queue, one the producer holds while the queue is full (memory must not grow with the set)."""
    q: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
    failure: list[BaseException] = []
    cur = store.cursor()

    def writer() -> None:
        while (batch := q.get()) is not None:
            if failure:
                continue
            try:
                cur.ingest(model_id, batch)
                on_written(batch)
            except BaseException as e:  # surfaced to the producer
                failure.append(e)

    t = threading.Thread(target=writer, name="layerscope-ingest", daemon=True)
    t.start()
    try:
        for batch in batches:
            if failure:
                break
            q.put(batch)
    finally:
        q.put(None)
        t.join()
    if failure:
        raise failure[0]
    try:  # packs the file; the runs are committed already, so this can never fail the job
        cur.checkpoint()
    except Exception as e:  # e.g. "Cannot CHECKPOINT" while another thread writes
        log.info("post-job checkpoint skipped (%s); DuckDB checkpoints later", e)
