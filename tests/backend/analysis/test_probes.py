"""Probes against scikit-learn with the same grouped folds (the independent reference)."""

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from sklearn.metrics import f1_score
from sklearn.model_selection import cross_val_predict, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from backend.analysis import probes as PR


def _data(n_prompts=60, tokens=3, d=12, n_classes=2, seed=2):
    """Layer 0: noise. Layer 1: the label shifts two dimensions (overlapping classes)."""
    rng = np.random.default_rng(seed)
    y_prompt = np.arange(n_prompts) % n_classes
    groups = np.repeat(np.arange(n_prompts), tokens)
    y = y_prompt[groups]
    scale = rng.uniform(0.5, 3, size=d)
    x = rng.normal(size=(2, len(y), d)) * scale + rng.normal(size=d) * 5
    x[1, :, 0] += 1.5 * scale[0] * y
    x[1, :, 1] -= 1.0 * scale[1] * (y == 1)
    names = np.array(["apple", "banana", "cherry", "date"])[y]
    return x.astype(np.float32), names, groups, y


def _sk(method):
    if method == "ridge":
        return make_pipeline(StandardScaler(), RidgeClassifier(alpha=10.0))
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000, tol=1e-8))


@pytest.mark.parametrize("method", ["logistic", "ridge"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_accuracy_and_predictions_equal_sklearn(method, n_classes):
    x, labels, groups, y = _data(n_classes=n_classes)
    res = PR.run_probes(x, labels, groups, folds=4, method=method, tol=1e-7, max_iter=500)
    splits = PR.grouped_folds(y, groups, 4, 0)
    for layer in range(2):
        ref = cross_val_score(_sk(method), x[layer], y, cv=splits)
        np.testing.assert_allclose(res.fold_accuracy[layer], ref, atol=1e-12)
        assert res.accuracy[layer] == pytest.approx(ref.mean(), abs=1e-12)
        oof = cross_val_predict(_sk(method), x[layer], y, cv=splits)
        np.testing.assert_array_equal(res.pred[layer], oof)
        assert res.macro_f1[layer] == pytest.approx(f1_score(y, oof, average="macro"))
    if method == "logistic":  # out-of-fold probabilities too
        proba = cross_val_predict(_sk(method), x[1], y, cv=splits, method="predict_proba")
        np.testing.assert_allclose(res.scores[1], proba, atol=2e-3)
    assert res.accuracy[1] > res.accuracy[0] + 0.2


@pytest.mark.parametrize("method", ["logistic", "ridge"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_exported_weights_reproduce_sklearn_fitted_on_all_units(method, n_classes):
    x, labels, groups, y = _data(n_classes=n_classes)
    res = PR.run_probes(x, labels, groups, folds=4, method=method, tol=1e-7, max_iter=500)
    clf = _sk(method).fit(x[1], y)
    ours = x[1] @ res.weights[1].T + res.bias[1]
    ref = clf.decision_function(x[1]).reshape(len(y), -1)
    np.testing.assert_allclose(ours, ref, atol=2e-3 * np.abs(ref).max())


def test_interval_majority_control_and_selectivity():
    x, labels, groups, y = _data(n_prompts=80)
    res = PR.run_probes(x, labels, groups, folds=5)
    fa = res.fold_accuracy[1]
    half = sps.t.ppf(0.975, 4) * fa.std(ddof=1) / np.sqrt(5)
    assert (res.ci_low[1], res.ci_high[1]) == pytest.approx((fa.mean() - half, fa.mean() + half))
    assert res.majority == 0.5
    assert abs(res.control[1] - 0.5) < 0.15 and res.selectivity[1] > 0.15
    assert PR.confusion(res, 1).sum() == len(y)
    np.testing.assert_allclose(res.scores.sum(-1), 1, atol=1e-5)
    assert res.first_decodable() == 1 and res.best_layer() == 1


def test_shuffled_control_keeps_class_balance():
    y = np.array([0] * 30 + [1] * 10)
    yc = PR.shuffled_labels(y, 0)
    assert np.bincount(yc).tolist() == [30, 10] and (yc != y).any()


def test_folds_never_split_a_prompt_and_are_reproducible():
    _x, _labels, groups, y = _data()
    a, b = PR.grouped_folds(y, groups, 5), PR.grouped_folds(y, groups, 5)
    for (tr, te), (_, te2) in zip(a, b):
        assert not set(groups[tr]) & set(groups[te])
        np.testing.assert_array_equal(te, te2)


def test_misclassified_are_the_wrong_units_most_confident_first():
    x, labels, groups, y = _data()
    res = PR.run_probes(x, labels, groups, folds=4)
    wrong = PR.misclassified(res, 0)
    assert set(wrong) == set(np.flatnonzero(res.pred[0] != y))
    conf = res.scores[0, wrong, res.pred[0, wrong]]
    assert (np.diff(conf) <= 1e-7).all()


def test_probe_input_errors():
    with pytest.raises(ValueError, match="two different labels"):
        PR.run_probes(np.zeros((1, 10, 2)), ["a"] * 10, np.arange(10))
    with pytest.raises(ValueError, match="at least 5 prompts"):
        PR.run_probes(np.zeros((1, 4, 2)), ["a", "b"] * 2, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="one label and group per unit"):
        PR.run_probes(np.zeros((1, 4, 2)), ["a", "b"], [0, 1])
    with pytest.raises(ValueError, match="method must be"):
        PR.run_probes(np.zeros((1, 10, 2)), ["a", "b"] * 5, np.arange(10), method="svm")
    x = np.zeros((1, 10, 2))
    x[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PR.run_probes(x, ["a", "b"] * 5, np.arange(10))


def test_constant_features_do_not_break_the_probe():
    x, labels, groups, _y = _data()
    x[:, :, 3] = 7.0
    for method in ("logistic", "ridge"):
        res = PR.run_probes(x, labels, groups, folds=4, method=method)
        assert np.isfinite(res.weights).all() and res.accuracy[1] > 0.7
