"""The contribution graph's shares and pruning on a hand-computed case."""

import numpy as np
import pytest

from backend.analysis.attribution import flow_graph, step_shares


def test_shares_by_hand():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    z = np.zeros((2, 2, 2))
    z[0, 0] = [0.0, 2.0]  # position 0 reads only itself
    z[1, 0] = [1.0, 0.0]
    z[1, 1] = [0.0, 1.0]
    s = step_shares(x, z, z.sum(1))
    # y_0 = [1, 2], |y|_1 = 3: x_0 = [1, 0] leaves [0, 2] -> 1; z_00 = [0, 2] leaves [1, 0] -> 2
    assert s.resid[0] == pytest.approx(1 / 3)
    np.testing.assert_allclose(s.attn[0], [2 / 3, 0.0])
    # y_1 = [1, 2]: each of x_1, z_10, z_11 leaves a vector of norm 2 -> importance 1 each
    assert s.resid[1] == pytest.approx(1 / 3)
    np.testing.assert_allclose(s.attn[1], [1 / 3, 1 / 3])


def test_a_part_pointing_away_gets_nothing_and_the_bias_counts_in_y():
    x = np.array([[1.0, 1.0]])
    z = np.array([[[-5.0, 0.0]]])
    s = step_shares(x, z, z.sum(1) + np.array([[6.0, 0.0]]))  # y = [2, 1]; bias 6
    # x: |y - x| = 1 -> importance 2; z: |[7, 1]| = 8 > 3 -> 0
    assert s.resid[0] == pytest.approx(1.0) and s.attn[0, 0] == 0.0


def test_pruning_and_route():
    resid = np.array([[0.5, 0.1], [0.9, 0.2]])  # (layers, T)
    attn = np.zeros((2, 2, 2))
    attn[0, 1, 0] = 0.6  # layer 1: position 1 reads position 0
    attn[1, 1, 1] = 0.05  # below the threshold
    attn[1, 0, 0] = 0.1
    g = flow_graph(resid, attn, position=1, threshold=0.2)
    kept = {(e.source, e.target, e.kind) for e in g.edges}
    assert kept == {
        ((0, 0), (1, 0), "resid"),
        ((1, 0), (2, 0), "resid"),
        ((1, 1), (2, 1), "resid"),
        ((0, 0), (1, 1), "attn"),
    }
    # the answer's node (2, 1) is reached from (1, 1) (resid 0.2), which reads (0, 0)
    assert g.route == {(2, 1), (1, 1), (0, 0)}
    on = {(e.source, e.target) for e in g.edges if e.route}
    assert on == {((1, 1), (2, 1)), ((0, 0), (1, 1))}
