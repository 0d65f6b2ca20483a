"""The derived cache's one codec (backend/derived.py): round trips of frozen dataclasses with
arrays, DataFrames, nested dataclasses, tuples and None; no pickles; a damaged or foreign
payload is a ValueError (callers recompute), and load() turns it into None."""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from backend import derived
from backend.analysis.projection import Projection


@dataclass(frozen=True)
class Inner:
    w: np.ndarray
    names: tuple[str, ...]


@dataclass(frozen=True)
class Outer:
    inner: Inner
    maybe: np.ndarray | None
    layers: tuple[int, ...]
    info: dict
    label: str = "x"


def test_round_trip_keeps_every_field_bit_for_bit():
    rng = np.random.default_rng(0)
    o = Outer(
        inner=Inner(w=rng.standard_normal((3, 4)).astype(np.float32), names=("a", "b")),
        maybe=None,
        layers=(0, 2, 5),
        info={"k": 3, "nested": [1, 2]},
    )
    meta = pd.DataFrame({"run_id": ["r1", "r2"], "pos": [0, -1], "label": ["a", None]})
    out = derived.unpack(derived.pack(result=o, meta=meta, note="hi"), result=Outer)
    r = out["result"]
    assert isinstance(r, Outer) and isinstance(r.inner, Inner)
    np.testing.assert_array_equal(r.inner.w, o.inner.w)
    assert r.inner.w.dtype == np.float32
    assert (r.inner.names, r.maybe, r.layers, r.info, r.label) == (
        ("a", "b"), None, (0, 2, 5), {"k": 3, "nested": [1, 2]}, "x")  # fmt: skip
    pd.testing.assert_frame_equal(out["meta"], meta)
    assert out["note"] == "hi"


def test_a_real_result_round_trips():
    p = Projection(
        coords=np.arange(24, dtype=np.float32).reshape(2, 6, 2),
        layers=(1, 3),
        method="pca",
        explained_variance=np.array([0.5, 0.25]),
        description="d",
        standardized=True,
    )
    q = derived.unpack(derived.pack(projection=p), projection=Projection)["projection"]
    np.testing.assert_array_equal(q.coords, p.coords)
    np.testing.assert_array_equal(q.explained_variance, p.explained_variance)
    assert (q.layers, q.method, q.standardized, q.seed) == ((1, 3), "pca", True, None)


def test_object_arrays_are_refused_and_damage_is_a_value_error():
    with pytest.raises(TypeError, match="pickles"):
        derived.pack(x=np.array([{"a": 1}], dtype=object))
    good = derived.pack(x=np.ones(3))
    for bad in (b"", b"not an npz", good[: len(good) // 2]):
        with pytest.raises(ValueError, match="does not decode"):
            derived.unpack(bad)


def test_load_treats_an_unreadable_entry_as_missing():
    class FakeStore:
        def __init__(self, raw):
            self.raw = raw

        def cache_get(self, kind, key):
            return self.raw

    assert derived.load(FakeStore(None), "k", "key") is None
    assert derived.load(FakeStore(b"garbage"), "k", "key") is None
    assert derived.load(FakeStore(derived.pack(a=1)), "k", "key") == {"a": 1}


def test_keys_change_with_every_input_and_not_otherwise():
    meta = pd.DataFrame({"run_id": ["r1"], "pos": [0]})
    k = derived.key({"a": 1, "b": (1, 2)}, meta)
    assert k == derived.key({"b": [1, 2], "a": 1}, meta.copy())
    assert k != derived.key({"a": 2, "b": (1, 2)}, meta)
    assert k != derived.key({"a": 1, "b": (1, 2)}, meta.assign(pos=[1]))
