"""The sparse probe on latents against scikit-learn (roc_auc_score for the selection, a
StandardScaler + LogisticRegression pipeline with the same grouped folds for the accuracy)."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from backend.analysis import probes as PR
from backend.analysis.features import select_latents, sparse_probe


def _codes(n, seed):
    """Sparse non-negative codes: latents 3 and 7 carry the label, the rest is noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = np.maximum(rng.normal(size=(n, 20)), 0) * (rng.random((n, 20)) < 0.3)
    z[:, 3] += 1.2 * y * rng.random(n)
    z[:, 7] += 0.8 * (1 - y) * rng.random(n)
    return z.astype(np.float32), np.array(["pl", "sg"])[y]


def test_selection_is_the_largest_auroc_distance_from_chance():
    z, labels = _codes(300, 0)
    cols, au = select_latents(z, labels, 4)
    ref = np.array([roc_auc_score(labels == "sg", z[:, j]) for j in range(z.shape[1])])
    dist = np.abs(ref - 0.5)
    assert set(cols[:2]) == {3, 7}
    np.testing.assert_allclose(np.abs(au - 0.5), np.sort(dist)[::-1][:4], atol=1e-12)
    assert au[list(cols).index(3)] == pytest.approx(ref[3])  # 'sg' vs rest, above 0.5


def test_sparse_probe_accuracy_equals_sklearn_on_the_same_folds():
    z_sel, y_sel = _codes(200, 1)
    z_ev, y_ev = _codes(120, 2)
    groups = np.arange(len(y_ev))
    sp = sparse_probe(z_sel, y_sel, z_ev, y_ev, groups, k=3)
    cols = list(sp.latents)
    y = np.unique(y_ev, return_inverse=True)[1]
    splits = PR.grouped_folds(y, groups, 5, 0)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000, tol=1e-8))
    ref = cross_val_score(pipe, z_ev[:, cols], y, cv=splits)
    d = sp.to_dict()
    assert d["accuracy"] == pytest.approx(ref.mean(), abs=1 / 24 + 1e-9)  # at most one tie
    assert d["interval"][0] <= d["accuracy"] <= d["interval"][1]
    assert d["accuracy"] > 0.8 and d["control"] < 0.7 and d["n_eval_prompts"] == 120
