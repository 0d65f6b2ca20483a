"""The Training view's own numbers (pure): per-layer CKA, onset steps, answer accuracy."""

import numpy as np
import pytest

from backend.analysis import training as T


def _cka_reference(x, y):
    """Linear CKA from its definition (Kornblith et al. 2019), centred Gram matrices."""
    n = len(x)
    h = np.eye(n) - 1.0 / n
    k, m = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return (k * m).sum() / np.sqrt((k * k).sum() * (m * m).sum())


def test_per_layer_cka_matches_the_definition():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 40, 8))
    b = a + rng.normal(scale=[[[0.1]], [[1.0]], [[5.0]]], size=(3, 40, 8))
    got = T.per_layer_cka(a, b, [0, 1, 2])
    want = [_cka_reference(a[i].astype(np.float64), b[i]) for i in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got[0] > got[1] > got[2]  # more noise, less similar
    np.testing.assert_allclose(T.per_layer_cka(a, a, [0, 1, 2]), 1.0, rtol=1e-6)


def test_per_layer_cka_refuses_different_units():
    with pytest.raises(ValueError, match="differ"):
        T.per_layer_cka(np.zeros((2, 5, 3)), np.zeros((2, 6, 3)), [0, 1])


@pytest.mark.parametrize(
    "values, level, want",
    [
        ([0.5, 0.6, 0.95, 0.97], 0.9, 200),
        ([0.5, 0.95, 0.6, 0.97], 0.9, 300),  # a blip above the level does not count
        ([0.95, 0.95, 0.95, 0.95], 0.9, 0),
        ([0.5, 0.95, 0.95, 0.6], 0.9, None),  # fell back below at the end
        ([0.5, np.nan, 0.95, 0.96], 0.9, 200),
    ],
)
def test_onset_is_the_step_from_which_a_curve_stays_up(values, level, want):
    assert T.onset([0, 100, 200, 300], values, level) == want


def test_pair_accuracy_counts_the_right_answer_more_likely():
    margins = np.array([[1.0, -2.0], [-1.0, -3.0], [0.0, 2.0]])  # logit(first) - logit(second)
    positive = np.array([True, False, True])  # the first answer is right for prompts 0 and 2
    # right: (0,0); (1,0) (1,1); (2,1) — a tie (2,0) counts as wrong
    assert T.pair_accuracy(margins, positive) == pytest.approx(4 / 6)
    with pytest.raises(ValueError):
        T.pair_accuracy(margins, positive[:2])
