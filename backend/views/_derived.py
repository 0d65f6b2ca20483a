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
