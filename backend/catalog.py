"""Bundled prompt sets and the glue that makes `--set <demo set>` work on an empty cache."""

from __future__ import annotations

import logging

from backend.errors import LayerScopeError
from backend.store import Store

log = logging.getLogger(__name__)


def demo_sets() -> dict[str, str]:
    """name -> one-line description of every bundled demo prompt set."""
    try:
        from backend.demo.sets import DEMO_SETS
    except ImportError:
        return {}
    return {name: desc for name, (_path, desc) in DEMO_SETS.items()}


def ensure_set(store: Store, name: str) -> None:
    """Load a bundled demo set into the store on first use; error if the set is unknown."""
    if name in set(store.list_sets()["set_name"]):
        return
    if name in demo_sets():
        from backend.demo.sets import load_demo_set

        n = store.save_prompt_set(name, load_demo_set(name), demo_sets()[name], source="bundled")
        log.info("loaded bundled prompt set %s (%d prompts)", name, n)
        return
    known = sorted(set(store.list_sets()["set_name"]) | set(demo_sets()))
    raise LayerScopeError(
        f"No prompt set '{name}' in the cache"
        + (f"; known sets: {', '.join(known)}." if known else "; extract one with --prompts FILE.")
    )


def model_id_for(store: Store, ref: str) -> str:
    """The stored model id for a model reference (bundled name, hub id, path or model id)."""
    from backend import models

    row = store.find_model(ref)
    if row is not None:
        return row["model_id"]
    mid = models.resolve(ref).model_id
    if store.get_model(mid) is None:
        raise LayerScopeError(f"Model '{ref}' has no runs in the cache yet; extract a set first.")
    return mid
