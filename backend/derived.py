"""One codec for the store's derived cache: results worth keeping (probe fits, UMAP
coordinates, patching grids, steering runs, tuned lenses, dictionaries) as bytes and back.

``pack(**parts)`` takes named parts — numpy arrays, DataFrames, frozen dataclasses (whose
fields are themselves arrays, DataFrames, dataclasses or JSON values) and plain JSON values —
and writes one ``.npz`` without pickles: arrays as arrays, DataFrames as Parquet bytes, the
rest as one JSON document. ``unpack(raw, **classes)`` reads it back, rebuilding the named
dataclasses; a payload that does not decode (damaged, or written by another version) raises
``ValueError`` — callers treat it as missing and recompute (``load``).

``key(*parts)`` is the cache key: sha256 over a canonical JSON of the parts (dataclasses as
dicts, tuples as lists) and the rows of any DataFrame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import typing
import zipfile

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)
FORMAT = 1  #: bump when the layout of a payload changes


def key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, pd.DataFrame):
            h.update(pd.util.hash_pandas_object(p, index=False).to_numpy().tobytes())
        else:
            h.update(json.dumps(_plain(p), sort_keys=True, default=_default).encode())
        h.update(b"\x00")
    return h.hexdigest()


def pack(**parts) -> bytes:
    arrays: dict[str, np.ndarray] = {}
    doc = {name: _encode(v, name, arrays) for name, v in parts.items()}
    buf = io.BytesIO()
    header = json.dumps({"format": FORMAT, "doc": doc}, default=_default).encode()
    np.savez(buf, _doc=np.frombuffer(header, dtype=np.uint8), **arrays)
    return buf.getvalue()


def unpack(raw: bytes, **classes) -> dict:
    """-> {name: value} with each part named in ``classes`` rebuilt as that dataclass."""
    try:
        z = np.load(io.BytesIO(raw), allow_pickle=False)
        header = json.loads(z["_doc"].tobytes())
        if header.get("format") != FORMAT:
            raise ValueError(f"derived payload format {header.get('format')}, not {FORMAT}")
        arrays = {k: z[k] for k in z.files if k != "_doc"}
        return {name: _decode(v, arrays, classes.get(name)) for name, v in header["doc"].items()}
    except (OSError, EOFError, KeyError, TypeError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"the derived payload does not decode ({type(e).__name__}: {e})") from e


def load(store, kind: str, cache_key: str, decode=None, **classes):
    """The entry under (kind, key) — ``unpack``ed with ``classes``, or ``decode(raw)`` for a
    payload of another layout — or None when absent or damaged: a truncated payload can fail
    in any decoder, and a damaged entry is a missing one (the caller recomputes it)."""
    try:
        raw = store.cache_get(kind, cache_key)
    except OSError:
        return None
    if raw is None:
        return None
    try:
        return decode(raw) if decode is not None else unpack(raw, **classes)
    except Exception as e:  # any decoding failure means "not usable"
        log.warning("derived %s entry %s is damaged (%s): recomputing", kind, cache_key[:12], e)
        return None


def save(store, kind: str, cache_key: str, payload: bytes) -> bool:
    """Keep a computed result; a full disk (or a read-only file) only costs the next visit a
    recomputation, so the result is still shown. True when stored."""
    try:
        store.cache_put(kind, cache_key, payload)
        return True
    except Exception as e:
        text = str(e).lower()
        if not any(s in text for s in ("no space", "disk full", "read-only", "read only")):
            raise
        log.warning("derived result %s not kept: %s", kind, str(e).splitlines()[0][:200])
        return False


def may_hold(store, model_ref: str) -> bool:
    """Whether a stored result for ``model_ref`` can exist without resolving it on the hub:
    a page link with a hub id never seen here must not start a download just to look up a
    result (``cached`` answers None: nothing stored)."""
    from backend import models

    return models.is_local(model_ref) or store.find_model(model_ref) is not None


# -- encoding ----------------------------------------------------------------------------------
def _encode(v, path: str, arrays: dict):
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            raise TypeError(f"{path}: object arrays cannot be stored without pickles")
        arrays[path] = v
        return {"__array__": path}
    if isinstance(v, pd.DataFrame):
        b = io.BytesIO()
        v.to_parquet(b, index=False)
        arrays[path] = np.frombuffer(b.getvalue(), dtype=np.uint8)
        return {"__frame__": path}
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {
            "__dataclass__": {
                f.name: _encode(getattr(v, f.name), f"{path}.{f.name}", arrays)
                for f in dataclasses.fields(v)
            }
        }
    if isinstance(v, dict):
        return {"__dict__": {str(k): _encode(x, f"{path}.{k}", arrays) for k, x in v.items()}}
    if isinstance(v, (list, tuple)):
        return [_encode(x, f"{path}.{i}", arrays) for i, x in enumerate(v)]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _decode(v, arrays: dict, cls=None):
    if isinstance(v, dict):
        if "__array__" in v:
            return arrays[v["__array__"]]
        if "__frame__" in v:
            return pd.read_parquet(io.BytesIO(arrays[v["__frame__"]].tobytes()))
        if "__dict__" in v:
            return {k: _decode(x, arrays) for k, x in v["__dict__"].items()}
        if "__dataclass__" in v:
            fields = v["__dataclass__"]
            if cls is None:
                return {k: _decode(x, arrays) for k, x in fields.items()}
            hints = typing.get_type_hints(cls)
            kw = {}
            for f in dataclasses.fields(cls):
                if f.name in fields:
                    kw[f.name] = _decode(fields[f.name], arrays, _dataclass_of(hints.get(f.name)))
                    if _is_tuple(hints.get(f.name)) and isinstance(kw[f.name], list):
                        kw[f.name] = _tuples(kw[f.name])
            return cls(**kw)
    if isinstance(v, list):
        return [_decode(x, arrays) for x in v]
    return v


def _dataclass_of(hint):
    """The dataclass a field holds (``X`` or ``X | None``), else None."""
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None


def _is_tuple(hint) -> bool:
    return any(t is tuple or typing.get_origin(t) is tuple for t in (hint, *typing.get_args(hint)))


def _tuples(v):
    return tuple(_tuples(x) if isinstance(x, list) else x for x in v)


def _plain(p):
    if dataclasses.is_dataclass(p) and not isinstance(p, type):
        return dataclasses.asdict(p)
    return p


def _default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    return str(o)
