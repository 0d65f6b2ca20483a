"""Reading the store's derived-results cache: a damaged entry is a missing one (recomputed)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


def load(store, kind: str, key: str, decode: Callable[[bytes], T]) -> T | None:
    """The entry ``(kind, key)`` decoded, or None when absent or damaged (a truncated payload
    can fail in any decoder: zlib, npz, JSON, pickle-free loaders), so the caller recomputes
    and overwrites it instead of showing an internal error."""
    raw = store.cache_get(kind, key)
    if raw is None:
        return None
    try:
        return decode(raw)
    except Exception as e:  # any decoding failure means "not usable"
        log.warning("derived cache entry %s is damaged (%s); recomputing", kind, type(e).__name__)
        return None


def may_hold(store, model_ref: str) -> bool:
    """Whether a stored result for ``model_ref`` can exist without resolving it on the hub:
    a page link with a hub id never seen here must not start a download just to look up a
    result (``cached`` answers None: nothing stored)."""
    from backend import models

    return models.is_local(model_ref) or store.find_model(model_ref) is not None


def save(store, kind: str, key: str, payload: bytes) -> bool:
    """Keep a computed result; a full disk (or a read-only file) only costs the next visit a
    recomputation, so the result is still shown. True when stored."""
    try:
        store.cache_put(kind, key, payload)
        return True
    except Exception as e:
        text = str(e).lower()
        if not any(s in text for s in ("no space", "disk full", "read-only", "read only")):
            raise
        log.warning("derived result %s not kept: %s", kind, str(e).splitlines()[0][:200])
        return False
