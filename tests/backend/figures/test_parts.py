import numpy as np
import pytest
from _plotly_utils.utils import to_typed_array_spec

from backend.figures._parts import typed, untyped


@pytest.mark.parametrize(
    "v",
    [
        np.linspace(-3, 3, 11, dtype=np.float32),
        np.linspace(-3, 3, 11),
        np.arange(5),  # int64 -> int8
        np.arange(0, 40_000, 7),  # -> int16 / int32
        np.array(
            [-(2**40), 2**40]
        ),  # beyond int32: plotly sends a list, we send float64 (same numbers)
        np.array([1, 2, 3], dtype=np.int32),
        np.arange(20, dtype=np.float32).reshape(10, 2)[:, 1],  # a strided column
        np.array([], dtype=np.float32),
    ],
)
def test_typed_is_what_plotly_would_send(v):
    ours, theirs = typed(v), to_typed_array_spec(v)
    if isinstance(theirs, dict):
        assert ours == theirs
    else:  # plotly sends it as a list: we send the same numbers
        np.testing.assert_array_equal(untyped(ours), np.asarray(theirs))
    np.testing.assert_array_equal(untyped(ours), v)


def test_typed_refuses_text_and_tables():
    with pytest.raises(ValueError):
        typed(np.array(["a", "b"]))
    with pytest.raises(ValueError):
        typed(np.zeros((2, 2)))
