"""The ``checkpoints`` job: one extraction over a model's training checkpoints, one progress.

``JobSpec(kind="checkpoints", model="demo", set_name=..., options={"checkpoints": [refs]})``
runs the ordinary extract job on each checkpoint (each is its own model in the store, its ref
``<model>@<revision>``), then measures its behaviour (held-out loss; answer accuracy on a set
with known answers) with one forward pass and keeps it in the store's derived cache, where
the Training view reads it. Checkpoints already cached cost nothing.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from backend import models
from backend.budget import Estimate, check_budget
from backend.jobs.base import JobContext, JobSpec, Progress
from backend.jobs.extract import estimate, run_extract
from backend.views import training

log = logging.getLogger(__name__)


def _sub_spec(spec: JobSpec, ref: str) -> JobSpec:
    return replace(spec, kind="extract", model=ref, options={})


def _plan(store, spec: JobSpec) -> list[tuple[str, Estimate]]:
    return [(ref, estimate(store, _sub_spec(spec, ref))) for ref in spec.options["checkpoints"]]


def run_checkpoints(ctx: JobContext) -> dict:
    """Extract the set on every checkpoint in turn and measure its behaviour."""
    store, spec, p = ctx.store, ctx.spec, ctx.progress
    plan = _plan(store, spec)
    total = Estimate(
        runs=sum(e.runs for _, e in plan),
        cached_runs=sum(e.cached_runs for _, e in plan),
        tokens=sum(e.tokens for _, e in plan),
        bytes=sum(e.bytes for _, e in plan),
        model_bytes=max((e.model_bytes for _, e in plan), default=0),
        seconds=None,
        truncated=sum(e.truncated for _, e in plan),
    )
    check_budget(store, total, ctx.budget)
    p.tokens_total, p.runs_total, p.runs_cached = total.tokens, total.runs, total.cached_runs
    ctx.report(force=True)
    done_tokens = done_runs = 0
    per: list[dict] = []
    for i, (ref, _) in enumerate(plan):
        if ctx.should_stop():
            break
        p.message = f"checkpoint {i + 1} of {len(plan)}: {ref}"
        sub = Progress(p.job_id, kind="extract", model=ref, set_name=spec.set_name)

        def relay(s: Progress, base=(done_tokens, done_runs)) -> None:
            p.tokens_done, p.runs_done = base[0] + s.tokens_done, base[1] + s.runs_done
            ctx.report()

        sub_ctx = JobContext(store, _sub_spec(spec, ref), sub, relay, ctx._stop, ctx.budget)
        r = run_extract(sub_ctx)
        done_tokens += sub.tokens_done
        done_runs += sub.runs_done
        p.tokens_done, p.runs_done = done_tokens, done_runs
        behaviour = ensure_behaviour(store, spec, ref, r["model_id"])
        per.append({"ref": ref, "model_id": r["model_id"], "runs": r["runs"], **behaviour})
        ctx.report(force=True)
    return {
        "set": spec.set_name,
        "model": spec.model,
        "checkpoints": per,
        "runs": done_runs,
        "cached_runs": p.runs_cached,
        "tokens": done_tokens,
        "truncated": total.truncated,
    }


def ensure_behaviour(store, spec: JobSpec, ref: str, model_id: str) -> dict:
    """The checkpoint's behaviour on the set, from the derived cache or one forward pass."""
    key = training.behaviour_key(model_id, spec.set_name)
    raw = store.cache_get(training.BEHAVIOUR_CACHE, key)
    if raw is not None:
        return json.loads(raw)
    lm = models.get_model(ref, spec.dtype, spec.device, spec.trust_remote_code)
    store.upsert_model(lm.info)
    b = measure_behaviour(lm, store.get_set(spec.set_name), spec.set_name)
    store.cache_put(training.BEHAVIOUR_CACHE, key, json.dumps(b).encode())
    return b


def measure_behaviour(lm, prompts, set_name: str) -> dict:
    """Held-out next-token loss and, for a set with known answers (the agreement set's verbs),
    the margins' accuracy: the inputs of ``training.Behaviour``."""
    from backend.analysis.training import pair_accuracy
    from backend.capture.behaviour import answer_margins, answer_token, next_token_loss

    texts, what = training.heldout_texts(models.family(lm.info.ref), prompts)
    nll, n = next_token_loss(lm, texts)
    out = {"heldout_loss": nll / max(n, 1), "heldout_tokens": n, "heldout_text": what}
    labels = tuple(sorted(prompts["label"].dropna().unique()))
    answers = training.known_answers(set_name, labels)
    if answers is not None:
        ids = [[answer_token(lm.tokenizer, w) for w in ws] for ws in answers]
        pairs = [(a, b) for a, b in zip(*ids) if a is not None and b is not None]
        if not pairs:
            return out
        keep = prompts["label"].isin(labels).to_numpy()
        sub = prompts[keep]
        m = answer_margins(lm, sub["text"].tolist(), pairs)
        out["answer_accuracy"] = pair_accuracy(m, (sub["label"] == labels[0]).to_numpy())
        out["answer_cells"] = int(m.size)
        out["answers"] = f"{labels[0]} vs {labels[1]} answers ({len(pairs)} pairs)"
    return out
