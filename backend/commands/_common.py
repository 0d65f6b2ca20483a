"""Helpers shared by CLI commands: progress bar, foreground extraction, formatting."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
from pathlib import Path

from backend import catalog
from backend.errors import LayerScopeError
from backend.jobs.base import JobSpec, Progress
from backend.prompts import slug
from backend.store import Store

log = logging.getLogger(__name__)


# -- numeric flags: checked when parsed (argparse prints `error: argument --x: ...`, exit 2) --
def int_in(lo: int, hi: int):
    """An argparse ``type``: an integer in [lo, hi]."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo} (got {v})")
        if v > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi:,} (got {v:,})")
        return v

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float, low_open: bool = False):
    """An argparse ``type``: a finite number in [lo, hi] ((lo, hi] with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(v) or v > hi or v < lo or (low_open and v == lo):
            shown = f"({lo:g}, {hi:g}]" if low_open else f"[{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {shown} (got {text})")
        return v

    parse.__name__ = "number"
    return parse


COUNT = int_in(1, 10_000_000)  #: a count of units, runs, tokens
TOP = int_in(1, 1000)  #: top-k tokens kept (a vocabulary-sized k is a memory bomb)
LAYER = int_in(0, 10_000)
SEED = int_in(0, 2**32 - 1)
NEW_TOKENS = int_in(1, 4096)


def progress_bar(p: Progress, stream=None) -> None:
    stream = stream or sys.stderr
    if not p.tokens_total:
        return
    frac = p.tokens_done / p.tokens_total
    bar = "#" * int(frac * 30)
    eta = f"{p.eta_s:5.0f}s" if p.eta_s is not None else "    ?"
    stream.write(
        f"\r[{bar:<30}] {p.tokens_done}/{p.tokens_total} tok  "
        f"{p.tokens_per_s:7.0f} tok/s  ETA {eta}"
    )
    if not p.active or p.tokens_done >= p.tokens_total:
        stream.write("\n")
    stream.flush()


def add_model_args(p, need_set: bool = True) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="bundled name, hub id[@revision] or local dir (default: the one model with runs "
        "for --set, else demo)",
    )
    if need_set:
        p.add_argument("--set", dest="set_name", required=True, help="prompt set name")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--trust-remote-code", action="store_true")


def run_job(store: Store, spec: JobSpec, quiet: bool = False) -> Progress:
    """Run a job in the foreground with a progress bar; raise its failure as an error."""
    from backend.jobs.worker import Worker  # loads the capture stack (torch): only when computing

    worker = Worker(store)
    p = worker.run(spec, on_progress=None if quiet else progress_bar)
    if p.status == "failed":
        raise LayerScopeError(p.message)
    return p


def ensure_runs(store: Store, args, quiet: bool = False):
    """Make sure the set's runs exist for the model (computing what is missing).
    Returns (model_id, runs DataFrame)."""
    catalog.ensure_set(store, args.set_name)
    cached = cached_runs(store, args)
    if cached is not None:
        return cached
    spec = JobSpec(
        model=args.model,
        set_name=args.set_name,
        dtype=getattr(args, "dtype", "auto"),
        device=getattr(args, "device", "cpu"),
        trust_remote_code=getattr(args, "trust_remote_code", False),
    )
    p = run_job(store, spec, quiet=quiet or getattr(args, "json", False))
    model_id = p.result["model_id"]
    return model_id, store.set_runs(args.set_name, model_id)


def cached_runs(store: Store, args):
    """(model_id, runs) when the store already covers the set for this model, without
    resolving or loading the model (no torch, no transformers); else None.

    Only with ``--dtype auto``: the stored model whose ref (or id) matches ``--model`` and
    whose runs cover every distinct prompt text of the set. An explicit dtype, a model never
    stored, or any missing prompt goes through the job, which computes what is missing."""
    if getattr(args, "dtype", "auto") != "auto":
        return None
    row = store.find_model(args.model)
    if row is None:
        return None
    runs = store.set_runs(args.set_name, row["model_id"])
    wanted = set(store.get_set(args.set_name)["text"])
    if not wanted or not wanted <= set(runs["text"]):
        return None
    return row["model_id"], runs


def set_name_from(path: str) -> str:
    """A set name from a prompt file's name (a safe slug of its stem)."""
    return slug(Path(path).stem, default="prompts")


def model_for_set(store: Store, args) -> str:
    """``--model`` as given, else the one model that has runs for ``--set`` (bundled demo sets
    fall back to the bundled demo model); several candidates -> ask, listing them."""
    if getattr(args, "model", None):
        return args.model
    set_name = getattr(args, "set_name", None)
    cov = store.set_coverage()
    refs = sorted(set(cov.loc[cov["set_name"] == set_name, "ref"])) if set_name else []
    if len(refs) == 1:
        return refs[0]
    if len(refs) > 1:
        raise LayerScopeError(
            f"Several models have runs for '{set_name}': {', '.join(refs)}; pick one with --model."
        )
    return "demo"


def add_replace_arg(p) -> None:
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace the prompts of an existing set of the same name (else refused)",
    )


def save_file_set(store: Store, args, set_name: str, df) -> tuple[int, bool]:
    """Store a prompt file's table as ``set_name``; an existing (or bundled) set with other
    prompts or labels is replaced only with ``--replace``. Returns (rows dropped as repeats,
    whether the set is new: a failed job then removes it, see ``forget_new_set``)."""
    from backend.prompts import dedupe

    kept, repeated = dedupe(df)
    stored = set_name in set(store.list_sets()["set_name"])
    if (stored or set_name in catalog.demo_sets()) and not getattr(args, "replace", False):
        old = store.get_set(set_name) if stored else None
        same = old is not None and list(old["text"]) == list(kept["text"])
        if same and "label" in kept:
            same = [None if v is None else str(v) for v in kept["label"]] == list(old["label"])
        if not same:
            what = f"{len(old)} prompts" if old is not None else "a bundled set"
            raise LayerScopeError(
                f"A prompt set '{set_name}' already exists ({what}); the file would replace it "
                f"with {len(kept)} prompts. Add --replace to replace it, or name a new set "
                "with --set."
            )
    store.save_prompt_set(set_name, df, source=str(getattr(args, "prompts", "") or ""))
    return repeated, not stored


@contextlib.contextmanager
def forgotten_if_failed(store: Store, set_name: str, created: bool):
    """Around a job: if it fails, a set this command created is not left behind empty."""
    try:
        yield
    except Exception:
        if created:
            forget_new_set(store, set_name)
        raise


def forget_new_set(store: Store, set_name: str) -> None:
    """After a failed job: remove a set this command created if no run of it exists. Best
    effort: on a full disk or a database DuckDB has invalidated, the job's own error is the
    one to report (the empty set is harmless and goes with the next delete)."""
    try:
        cov = store.set_coverage()
        if not (cov["set_name"] == set_name).any():
            store.delete_set(set_name)
    except Exception as e:
        log.warning("could not remove the new set %r after the failed job: %s", set_name, e)
