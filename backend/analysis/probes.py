"""Linear probes per layer with grouped cross-validation and controls (pure).

Folds are split by prompt (``groups``): tokens of one prompt never sit on both sides.
Each layer reports mean accuracy with a 95% t-interval across folds, macro-F1, and a
shuffled-label control (labels permuted across prompts) so that selectivity = acc - control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeResult:
    layers: tuple[int, ...]
    classes: tuple[str, ...]
    accuracy: np.ndarray  #: (n_layers,) mean over folds
    ci_low: np.ndarray  #: (n_layers,) 95% t-interval across folds
    ci_high: np.ndarray
    macro_f1: np.ndarray  #: (n_layers,)
    control: np.ndarray  #: (n_layers,) shuffled-label accuracy
    majority: float  #: majority-class baseline
    pred: np.ndarray  #: (n_layers, n_units) out-of-fold predicted class index
    scores: np.ndarray  #: (n_layers, n_units, n_classes) out-of-fold probabilities
    y: np.ndarray  #: (n_units,) true class index
    weights: np.ndarray  #: (n_layers, n_classes_or_1, d) fitted on all units (standardised)
    folds: int
    method: str

    @property
    def selectivity(self) -> np.ndarray:
        return self.accuracy - self.control

    def best_layer(self) -> int:
        return self.layers[int(np.argmax(self.accuracy))]


def grouped_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int = 0):
    """StratifiedGroupKFold splits (falls back to GroupKFold when a class is too rare)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise ValueError(f"need at least {k} prompts for {k}-fold cross-validation, "
                         f"got {n_groups}")
    try:
        cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        return list(cv.split(np.zeros(len(y)), y, groups))
    except ValueError:
        return list(GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
            np.zeros(len(y)), y, groups))


def _make(method: str, seed: int):
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if method == "ridge":
        return make_pipeline(StandardScaler(), RidgeClassifier(alpha=10.0))
    if method == "logistic":
        return make_pipeline(StandardScaler(),
                             LogisticRegression(C=0.1, max_iter=200, random_state=seed))
    raise ValueError("method must be 'logistic' or 'ridge'")


def _scores(clf, x):
    if hasattr(clf, "predict_proba"):
        return clf.predict_proba(x)
    d = clf.decision_function(x)
    d = d[:, None] if d.ndim == 1 else d
    if d.shape[1] == 1:
        d = np.hstack([-d, d])
    e = np.exp(d - d.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def run_probes(x: np.ndarray, labels, groups, layers=None, folds: int = 5,
               method: str = "logistic", seed: int = 0) -> ProbeResult:
    """x: (n_layers, n_units, d); labels, groups: (n_units,)."""
    from sklearn.metrics import f1_score

    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups)
    if x.ndim != 3 or x.shape[1] != len(labels) or len(groups) != len(labels):
        raise ValueError("x must be (n_layers, n_units, d) with one label and group per unit")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("a probe needs at least two different labels")
    layers = tuple(range(x.shape[0])) if layers is None else tuple(layers)
    splits = grouped_folds(y, groups, folds, seed)
    rng = np.random.default_rng(seed)
    # shuffled control: permute labels across prompts (a prompt's tokens keep one label)
    ug, inv = np.unique(groups, return_inverse=True)
    first = np.array([np.flatnonzero(inv == g)[0] for g in range(len(ug))])
    y_ctrl = rng.permutation(y[first])[inv]
    n_l, n_u, nc = x.shape[0], len(y), len(classes)
    acc, lo, hi, f1, ctrl = (np.zeros(n_l) for _ in range(5))
    pred, scores = np.zeros((n_l, n_u), int), np.zeros((n_l, n_u, nc))
    w_rows = nc if nc > 2 else 1
    weights = np.zeros((n_l, w_rows, x.shape[2]), np.float32)
    t = _t95(len(splits))
    for li in range(n_l):
        fold_acc, fold_ctrl = [], []
        for tr, te in splits:
            clf = _make(method, seed).fit(x[li, tr], y[tr])
            scores[li, te] = _scores(clf, x[li, te])
            pred[li, te] = clf.predict(x[li, te])
            fold_acc.append((pred[li, te] == y[te]).mean())
            c = _make(method, seed).fit(x[li, tr], y_ctrl[tr])
            fold_ctrl.append((c.predict(x[li, te]) == y_ctrl[te]).mean())
        fa = np.array(fold_acc)
        acc[li], ctrl[li] = fa.mean(), np.mean(fold_ctrl)
        half = t * fa.std(ddof=1) / np.sqrt(len(fa)) if len(fa) > 1 else 0.0
        lo[li], hi[li] = fa.mean() - half, fa.mean() + half
        f1[li] = f1_score(y, pred[li], average="macro")
        weights[li] = _make(method, seed).fit(x[li], y)[-1].coef_.reshape(w_rows, -1)
    majority = float(np.bincount(y).max() / n_u)
    return ProbeResult(layers, tuple(classes), acc, lo, hi, f1, ctrl, majority, pred, scores, y,
                       weights, folds, method)


def confusion(result: ProbeResult, layer: int) -> np.ndarray:
    """(n_classes, n_classes) counts: rows = true class, columns = predicted."""
    li = result.layers.index(layer)
    nc = len(result.classes)
    m = np.zeros((nc, nc), int)
    np.add.at(m, (result.y, result.pred[li]), 1)
    return m
