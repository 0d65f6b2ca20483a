"""Steering directions from ``.npy`` files: read safely, checked, and (for the app) only from an
upload or the cache's own ``directions/`` folder.

The CLI user names their own files; a page's ``?direction=`` comes from a URL anyone can write,
so the Steering page resolves it with ``in_cache_folder`` (a bare file name inside the folder)
and never echoes the server path it was given.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path

import numpy as np

from backend.errors import LayerScopeError

FOLDER = "directions"
MAX_BYTES = 64 * 2**20  #: an upload larger than this is no d_model vector
MAX_ABS = 1e6  #: larger components are a unit error (what is added is α · unit · typical norm)
_NAME = re.compile(r"^[0-9a-f]{16}\.npy$")


def folder(db_path) -> Path:
    """``directions/`` next to the cache file (the app's uploads)."""
    return Path(db_path).resolve().parent / FOLDER


def load_vector(src: Path | bytes, d: int | None = None) -> np.ndarray:
    """A 1-D float64 direction of finite, bounded values and non-zero norm from a ``.npy``
    file or its bytes (no pickles); ``d``: the model's d_model. Errors name the file only."""
    name = f"'{Path(src).name}'" if isinstance(src, (str, Path)) else "the uploaded file"
    if isinstance(src, (str, Path)) and not Path(src).is_file():
        raise LayerScopeError(f"No direction file {name}.")
    size = len(src) if isinstance(src, bytes) else Path(src).stat().st_size
    if size > MAX_BYTES:
        raise LayerScopeError(f"The direction file {name} is larger than 64 MB.")
    try:
        v = np.load(io.BytesIO(src) if isinstance(src, bytes) else src, allow_pickle=False)
        v = np.asarray(v, dtype=np.float64)
    except (ValueError, OSError, TypeError, EOFError):
        raise LayerScopeError(f"The direction file {name} is not a readable .npy array.") from None
    if v.ndim != 1 or (d is not None and v.shape[0] != d):
        want = f"d_model = {d}: give a vector of {d} values" if d else "give a 1-D vector"
        raise LayerScopeError(
            f"The direction in {name} has shape {tuple(v.shape)}; the residual stream of this "
            f"model has {want}."
        )
    if not np.isfinite(v).all() or np.abs(v).max(initial=0.0) > MAX_ABS:
        raise LayerScopeError(
            f"The direction in {name} has values that are not finite or larger than {MAX_ABS:g}."
        )
    if not np.linalg.norm(v) > 0:
        raise LayerScopeError(f"The direction in {name} is all zeros: it has no direction.")
    return v


def save_upload(db_path, data: bytes) -> str:
    """Check an uploaded ``.npy`` and keep it in the cache's folder; its name (content hash)."""
    load_vector(data)
    name = hashlib.sha256(data).hexdigest()[:16] + ".npy"
    out = folder(db_path)
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(data)
    return name


def in_cache_folder(db_path, value: str) -> str:
    """A page's direction value (an uploaded file's name) as the path of that file inside the
    cache's folder; anything else (another path, traversal) is refused without echoing it."""
    if not _NAME.match(value or ""):
        raise LayerScopeError(
            "A direction file comes from an upload on this page (means, probe and random need "
            "none); the one in the link is not an uploaded direction."
        )
    path = folder(db_path) / value
    if not path.is_file():
        raise LayerScopeError(
            "The uploaded direction in the link is not in this cache (upload it again)."
        )
    return str(path)
