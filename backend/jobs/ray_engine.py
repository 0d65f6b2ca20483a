"""The Ray engine of the ``extract`` job: capture on a Ray cluster into Parquet shards.

Same semantics as the local engine (``backend/jobs/extract.py``): the driver computes the
plan with the same ``jobs.plan.extract_plan`` (same run ids, only the missing runs are sent), and the
workers call the same ``capture.extract.tokenize`` + ``capture`` and the same codec, so a run
computed by either engine is a cache hit for both.

Data flow (one "wave" of at most ``wave_runs`` runs at a time):

    driver: missing (run_id, text), longest first -> ray.data.from_items
    actors: CaptureUDF (model loaded once per actor) -> Arrow rows, one per (run, layer):
            run_id, layer, n_tokens, d_model, codec, data (the store's codec bytes);
            layer-0 rows also carry the run's token metadata as list columns
            (token_ids, tokens, starts, ends, special), truncated and the ModelInfo JSON
    write : Parquet under <shard_root>/<model_id>/.tmp-<job_id>/layer=K/*.parquet
    driver: rename .tmp-<job_id> -> <job_id> (a shard is visible only once complete), check
            every layer holds every run exactly once, then ``Store.register_shards`` adds
            the model, prompts, runs, tokens and shard files in ONE transaction.

The store reads shard-resident runs in place (DuckDB ``read_parquet``) behind the same API.
A driver killed before the transaction leaves at most an unregistered directory (never read;
a rerun computes only what is missing). A worker process that dies is restarted by Ray and
its task retried; duplicates or gaps would fail ``Store.check_shard`` before anything is
registered. A worker that raises fails the job with the cause; nothing of the wave is
registered and its temporary directory is removed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from backend.errors import LayerScopeError
from backend.jobs.base import JobContext, JobSpec
from backend.jobs.plan import extract_plan
from backend.store import Store

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parents[1]  #: backend/

#: test hooks (read by the driver, handed to the actors): a prompt containing this text makes
#: the actor raise; with DIE_ONCE set to a file path, the first actor call kills its process
FAIL_ON_ENV = "LAYERSCOPE_RAY_FAIL_ON"
DIE_ONCE_ENV = "LAYERSCOPE_RAY_DIE_ONCE"
#: test hook: the driver kills itself (SIGKILL) after the shard is complete and renamed, just
#: before the registering transaction -- the worst moment for a kill -9 of the driver
DRIVER_KILL_ENV = "LAYERSCOPE_RAY_KILL_DRIVER_BEFORE_REGISTER"

SHARD_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("layer", pa.int16()),
        ("n_tokens", pa.int32()),
        ("d_model", pa.int32()),
        ("codec", pa.string()),
        ("data", pa.binary()),
        # layer-0 rows only (null elsewhere): the run's token metadata and the model info
        ("truncated", pa.bool_()),
        ("token_ids", pa.list_(pa.int32())),
        ("tokens", pa.list_(pa.string())),
        ("starts", pa.list_(pa.int32())),
        ("ends", pa.list_(pa.int32())),
        ("special", pa.list_(pa.bool_())),
        ("info", pa.string()),
    ]
)


class CaptureUDF:
    """Ray Data ``map_batches`` class: one model per actor, batches of (run_id, text)."""

    def __init__(
        self,
        model: str,
        dtype: str,
        device: str,
        trust_remote_code: bool,
        max_tokens: int | None,
        batch_tokens: int,
        threads: int | None = None,
        fail_on: str | None = None,
        die_once: str | None = None,
    ):
        import torch

        from backend import models
        from backend.records import CaptureSettings

        if threads:
            torch.set_num_threads(threads)
        self.lm = models.get_model(model, dtype, device, trust_remote_code)
        self.settings = CaptureSettings(max_tokens=max_tokens, dtype=dtype)
        self.max_tokens, self.batch_tokens = max_tokens, batch_tokens
        self.info = self.lm.info.to_json()
        self.fail_on, self.die_once = fail_on, die_once

    def __call__(self, batch: dict) -> pa.Table:
        from backend.capture import extract
        from backend.store import codec

        ids, texts = [str(v) for v in batch["run_id"]], [str(v) for v in batch["text"]]
        if self.die_once and not os.path.exists(self.die_once):
            Path(self.die_once).write_text(str(os.getpid()))
            os._exit(1)  # a worker process lost mid-job (Ray restarts it, retries the task)
        if self.fail_on:
            for t in texts:
                if self.fail_on in t:
                    raise RuntimeError(f"capture failed on prompt {t!r} (injected failure)")
        toks = extract.tokenize(self.lm.tokenizer, texts, self.max_tokens)
        by_id = dict(zip(ids, toks))
        cols: dict[str, list] = {f.name: [] for f in SHARD_SCHEMA}
        for runs in extract.capture(
            self.lm, list(zip(ids, toks)), self.settings, self.batch_tokens
        ):
            for r in runs:
                t = by_id[r.run_id]
                _, n, d = r.hidden.shape
                for layer, (c, blob) in enumerate(codec.encode_run(r.hidden, r.run_id)):
                    first = layer == 0
                    row = {
                        "run_id": r.run_id,
                        "layer": layer,
                        "n_tokens": n,
                        "d_model": d,
                        "codec": c,
                        "data": blob,
                        "truncated": t.truncated if first else None,
                        "token_ids": r.token_ids if first else None,
                        "tokens": r.tokens if first else None,
                        "starts": [o[0] for o in r.offsets] if first else None,
                        "ends": [o[1] for o in r.offsets] if first else None,
                        "special": r.special if first else None,
                        "info": self.info if first else None,
                    }
                    for k, v in row.items():
                        cols[k].append(v)
        return pa.table(cols, schema=SHARD_SCHEMA)


def _files(job_dir: Path) -> list[tuple[str, int, int]]:
    """(absolute path, layer, bytes) of every Parquet file under job_dir/layer=K/."""
    out = []
    for f in sorted(job_dir.glob("layer=*/*.parquet")):
        out.append((str(f.resolve()), int(f.parent.name.split("=", 1)[1]), f.stat().st_size))
    return out


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT (or ray://HOST:PORT) address answers a TCP connection within ``timeout_s``
    (Ray itself retries an unreachable head for minutes); ``auto`` is Ray's to find."""
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        raise LayerScopeError(
            f"The Ray cluster at {address[:80]} does not answer ({type(e).__name__}): start it "
            "(ray start --head) or check --ray-address; nothing was computed."
        ) from None


def _init_ray(address: str | None, workers: int, gpus_per_worker: float) -> bool:
    """Join the given cluster, or start a local one; True if we started (and must stop) it."""
    import ray

    if ray.is_initialized():
        return False
    if address:  # ship this package to the cluster's workers (they may not have it)
        check_reachable(address)
        ray.init(
            address=address,
            runtime_env={"py_modules": [str(PACKAGE)]},
            include_dashboard=False,
            log_to_driver=False,
        )
    else:
        ray.init(num_cpus=workers + 1, include_dashboard=False, log_to_driver=False)
    return True


def check_resources(resources: dict, workers: int, gpus_per_worker: float) -> None:
    """Refuse, before anything is submitted, actors the cluster can never place (Ray would
    wait for them forever): ``workers`` actors of one CPU, or of ``gpus_per_worker`` GPUs."""
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if gpus_per_worker > 0:
        if gpus < gpus_per_worker:
            raise LayerScopeError(
                f"The Ray cluster has {gpus:g} GPUs, so a worker asking for {gpus_per_worker:g} "
                "can never start: use --gpus-per-worker 0 (CPU workers) or a cluster with GPUs."
            )
        fit = int(gpus // gpus_per_worker)
        if workers > fit:
            raise LayerScopeError(
                f"The Ray cluster's {gpus:g} GPUs hold {fit} workers of {gpus_per_worker:g} GPU "
                f"each, not {workers}: use --workers {fit} or a smaller --gpus-per-worker."
            )
    elif workers > cpus:
        raise LayerScopeError(
            f"The Ray cluster has {cpus:g} CPUs, so {workers} CPU workers cannot all start: "
            f"use --workers {int(cpus)} or fewer."
        )


def run_ray_extract(
    store: Store,
    spec: JobSpec,
    workers: int = 1,
    gpus_per_worker: float = 0.0,
    address: str | None = None,
    batch_tokens: int = 8192,
    shard_root: str | Path | None = None,
    job_id: str | None = None,
    wave_runs: int = 100_000,
    batch_prompts: int = 64,
    on_wave: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict:
    """Capture the set's missing runs on Ray; returns the extract job's summary dict.

    ``workers`` actors, each with ``gpus_per_worker`` GPUs (0: CPU, one core each, on a
    local Ray started with workers + 1 CPUs unless one is running or ``address`` is given).
    Each wave of at most ``wave_runs`` runs is one shard and one transaction.
    """
    from backend.models import ModelInfo

    if workers < 1:
        raise LayerScopeError("--workers must be at least 1.")
    if gpus_per_worker < 0:
        raise LayerScopeError("--gpus-per-worker must be 0 or more.")
    if gpus_per_worker > 0 and spec.device == "cpu":
        spec = dataclasses.replace(spec, device="cuda")  # plan and actors: the same dtype
    mref, settings, texts, missing = extract_plan(store, spec, repair=True)
    result = {
        "set": spec.set_name,
        "model": spec.model,
        "model_id": mref.model_id,
        "runs": 0,
        "cached_runs": len(texts) - len(missing),
        "tokens": 0,
        "truncated": 0,
        "engine": "ray",
        "shards": [],
        "ray_start_s": 0.0,
    }
    if not missing:
        return result  # a full cache hit: no Ray, no model
    import ray

    t0 = time.monotonic()
    started = _init_ray(address, workers, gpus_per_worker)
    result["ray_start_s"] = round(time.monotonic() - t0, 3)
    root = Path(shard_root) if shard_root else store.shard_root()
    job_id = job_id or uuid.uuid4().hex[:12]
    settings_json = json.dumps(settings.key(), sort_keys=True)
    missing = sorted(missing, key=lambda m: -len(m[1]))  # similar lengths share a batch
    try:
        check_resources(ray.cluster_resources(), workers, gpus_per_worker)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        for w, start in enumerate(range(0, len(missing), wave_runs)):
            if should_stop is not None and should_stop():
                break
            wave = missing[start : start + wave_runs]
            wave_id = job_id if len(missing) <= wave_runs else f"{job_id}-{w}"
            files = _capture_wave(
                wave, wave_id, root / mref.model_id, spec, settings.dtype, workers,
                gpus_per_worker, batch_tokens, batch_prompts,
            )  # fmt: skip
            info = ModelInfo(**store.shard_model_info([f[0] for f in files if f[1] == 0]))
            plan = pd.DataFrame(
                {"run_id": [m[0] for m in wave], "text": [m[1] for m in wave]}
            ).assign(settings=settings_json)
            if os.environ.get(DRIVER_KILL_ENV):
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                store.register_shards(info, wave_id, plan, files)
            except Exception:  # nothing registered: the files must not linger either
                shutil.rmtree(root / mref.model_id / wave_id, ignore_errors=True)
                raise
            result["runs"] += len(wave)
            result["shards"].append(wave_id)
            if on_wave is not None:
                on_wave(result["runs"], len(missing))
        n = store.set_runs(spec.set_name, mref.model_id)
        done = n[n["run_id"].isin({m[0] for m in missing})]
        result["tokens"] = int(done["n_tokens"].sum())
        result["truncated"] = int(done["truncated"].sum())
    finally:
        if started:
            ray.shutdown()
    return result


def _capture_wave(
    wave, wave_id, model_root: Path, spec: JobSpec, dtype: str, workers: int,
    gpus_per_worker: float, batch_tokens: int, batch_prompts: int,
):  # fmt: skip
    """Run one wave through Ray Data into a complete shard directory; returns its files."""
    import ray

    tmp = model_root / f".tmp-{wave_id}"
    final = model_root / wave_id
    shutil.rmtree(tmp, ignore_errors=True)
    ds = ray.data.from_items(
        [{"run_id": rid, "text": text} for rid, text in wave],
        override_num_blocks=max(1, min(len(wave) // batch_prompts + 1, 4 * workers)),
    )
    cpu = gpus_per_worker == 0
    out = ds.map_batches(
        CaptureUDF,
        fn_constructor_kwargs={
            "model": spec.model,
            "dtype": dtype,
            "device": spec.device,
            "trust_remote_code": spec.trust_remote_code,
            "max_tokens": spec.max_tokens,
            "batch_tokens": batch_tokens,
            "threads": 1 if cpu else None,
            "fail_on": os.environ.get(FAIL_ON_ENV) or None,
            "die_once": os.environ.get(DIE_ONCE_ENV) or None,
        },
        batch_size=batch_prompts,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),  # restarts died actors, retries
        num_cpus=1 if cpu else None,
        num_gpus=gpus_per_worker or None,
        # a local cluster's workers import this checkout (a remote one got py_modules)
        runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}},
    )
    try:
        out.write_parquet(str(tmp), partition_cols=["layer"], compression="none")
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LayerScopeError(
            f"The Ray extract failed; nothing was registered. Cause: {_cause(e)}"
        ) from e
    if not any(tmp.glob("layer=0/*.parquet")):
        shutil.rmtree(tmp, ignore_errors=True)
        raise LayerScopeError("The Ray extract wrote no shard files; nothing was registered.")
    shutil.rmtree(final, ignore_errors=True)  # an unregistered leftover of a killed driver
    os.replace(tmp, final)  # the shard becomes visible (to registration) only when complete
    return _files(final)


def _pythonpath() -> str:
    parts = [str(PACKAGE.parent), *filter(None, os.environ.get("PYTHONPATH", "").split(":"))]
    return ":".join(dict.fromkeys(parts))


_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w+(?:Error|Exception)): (.+)$")
_RAY_WRAPPERS = ("Ray", "UserCode", "ObjectRef", "Actor", "Task", "WorkerCrashed")


def _cause(e: BaseException) -> str:
    """The worker's own error behind Ray's wrappers (Ray keeps it as traceback text):
    'RuntimeError: ...'; else the first line of Ray's message."""
    found, seen, todo = None, set(), [e]
    while todo:
        x = todo.pop()
        if x is None or id(x) in seen:
            continue
        seen.add(id(x))
        for line in str(x).splitlines():
            m = _ERROR_LINE.match(line)
            if m and not m.group(1).startswith(_RAY_WRAPPERS):
                found = f"{m.group(1)}: {m.group(2).strip()}"
        todo += [x.__cause__, x.__context__, getattr(x, "cause", None)]
    if found:
        return found
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def run_ray_job(ctx: JobContext) -> dict:
    """The ``extract`` job handler when ``spec.options['engine'] == 'ray'``."""
    o, p = ctx.spec.options, ctx.progress

    def on_wave(done: int, total: int) -> None:
        p.runs_done, p.runs_total = done, total
        ctx.report(force=True)

    return run_ray_extract(
        ctx.store,
        ctx.spec,
        workers=int(o.get("workers", 1)),
        gpus_per_worker=float(o.get("gpus_per_worker", 0)),
        address=o.get("ray_address"),
        batch_tokens=ctx.spec.batch_tokens,
        shard_root=o.get("shard_root"),
        job_id=p.job_id,
        on_wave=on_wave,
        should_stop=ctx.should_stop,
    )
