"""Linear probes per layer with grouped cross-validation and controls (pure).

Folds are split by prompt (``groups``): tokens of one prompt never sit on both sides.
Each layer reports mean accuracy with a 95% t-interval across folds, macro-F1, a majority
baseline and a shuffled-label control (selectivity = accuracy - control), plus out-of-fold
predictions and class scores for every unit and the probe refitted on all units.

Both probes standardise each training fold (as ``StandardScaler`` would) and solve all folds,
the control and the final fit of one layer together:

- ``logistic``: L2 logistic regression (``LogisticRegression(C)`` objective: binary log-loss or
  multinomial), minimised with scipy's L-BFGS, jointly over the problems;
- ``ridge``: ``RidgeClassifier(alpha)`` in closed form from one Gram matrix per layer
  (train Gram = full Gram - test Gram), exact.

Both are checked against scikit-learn's ``cross_val_score`` in the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from backend.analysis import linear

log = logging.getLogger(__name__)
METHODS = ("logistic", "ridge")


@dataclass(frozen=True)
class ProbeResult:
    layers: tuple[int, ...]
    classes: tuple[str, ...]
    accuracy: np.ndarray  #: (n_layers,) mean out-of-fold accuracy over folds
    ci_low: np.ndarray  #: (n_layers,) 95% t-interval of the fold mean
    ci_high: np.ndarray  #: (n_layers,)
    fold_accuracy: np.ndarray  #: (n_layers, folds)
    macro_f1: np.ndarray  #: (n_layers,) of the pooled out-of-fold predictions
    control: np.ndarray  #: (n_layers,) accuracy of the same probe on shuffled labels
    majority: float  #: share of the most frequent class
    pred: np.ndarray  #: (n_layers, n_units) out-of-fold predicted class index
    scores: np.ndarray  #: (n_layers, n_units, n_classes) out-of-fold class scores, rows sum to 1
    y: np.ndarray  #: (n_units,) true class index
    weights: np.ndarray  #: (n_layers, rows, d) raw-space weights (rows = 1 if binary)
    bias: np.ndarray  #: (n_layers, rows); score = h @ weights[l].T + bias[l]
    folds: int
    method: str

    def __post_init__(self):
        n_l, n_u = self.pred.shape
        if self.scores.shape != (n_l, n_u, len(self.classes)) or len(self.layers) != n_l:
            raise ValueError("inconsistent probe result shapes")

    @property
    def selectivity(self) -> np.ndarray:
        """(n_layers,) accuracy - shuffled-label control."""
        return self.accuracy - self.control

    def best_layer(self) -> int:
        return self.layers[int(np.argmax(self.accuracy))]

    def first_decodable(self, margin: float = 0.05) -> int | None:
        """First layer whose interval lies ``margin`` above both the majority and the control."""
        ok = self.ci_low > np.maximum(self.majority, self.control) + margin
        return self.layers[int(np.argmax(ok))] if ok.any() else None


def grouped_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int = 0):
    """StratifiedGroupKFold splits (GroupKFold when a class has fewer groups than folds)."""
    import warnings

    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n_groups = len(np.unique(groups))
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    if n_groups < k:
        raise ValueError(f"need at least {k} prompts for {k}-fold cross-validation, got {n_groups}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" notice
        try:
            cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            return list(cv.split(np.zeros(len(y)), y, groups))
        except ValueError:
            return list(
                GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(
                    np.zeros(len(y)), y, groups
                )
            )


def _t95(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def shuffled_labels(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """The control task: the same labels randomly reassigned to units (class balance kept)."""
    return np.random.default_rng(seed).permutation(y)


def run_probes(
    x,
    labels,
    groups,
    layers=None,
    folds: int = 5,
    method: str = "logistic",
    seed: int = 0,
    C: float = 0.1,
    alpha: float = 10.0,
    max_iter: int = 100,
    tol: float = 1e-4,
) -> ProbeResult:
    """Probe every layer of ``x`` (n_layers, n_units, d) for ``labels`` (n_units,), with
    folds that keep each ``groups`` value (n_units,; the prompt) on one side.

    ``C`` is the inverse L2 strength of the logistic probe, ``alpha`` the ridge penalty.
    """
    from sklearn.metrics import f1_score

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, not '{method}'")
    x = np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups)
    if x.ndim != 3 or x.shape[1] != len(labels) or len(groups) != len(labels):
        raise ValueError("x must be (n_layers, n_units, d) with one label and group per unit")
    if not np.isfinite(x).all():
        raise ValueError("the vectors contain NaN or infinite values")
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError("a probe needs at least two different labels")
    layers = tuple(range(x.shape[0])) if layers is None else tuple(int(v) for v in layers)
    if len(layers) != x.shape[0]:
        raise ValueError("one layer number per row of x is needed")
    splits = grouped_folds(y, groups, folds, seed)
    y_ctrl = shuffled_labels(y, seed)
    n_l, n_u, nc = x.shape[0], len(y), len(classes)
    rows = 1 if nc == 2 else nc
    tests = [te for _, te in splits]
    fold_acc, ctrl = np.zeros((n_l, len(splits))), np.zeros(n_l)
    pred, scores = np.zeros((n_l, n_u), np.int64), np.zeros((n_l, n_u, nc), np.float32)
    weights = np.zeros((n_l, rows, x.shape[2]), np.float32)
    bias = np.zeros((n_l, rows), np.float32)
    f1 = np.zeros(n_l)
    fit = linear.logistic_layer if method == "logistic" else linear.ridge_layer
    opts = {"C": C, "max_iter": max_iter, "tol": tol} if method == "logistic" else {"alpha": alpha}
    for li in range(n_l):
        out = fit(x[li], y, y_ctrl, tests, nc, **opts)
        for f, te in enumerate(tests):
            s = out.test_scores[f]
            pred[li, te] = s.argmax(1)
            scores[li, te] = s
            fold_acc[li, f] = (pred[li, te] == y[te]).mean()
        ctrl[li] = np.mean(
            [(out.control_pred[f] == y_ctrl[te]).mean() for f, te in enumerate(tests)]
        )
        weights[li], bias[li] = out.weights, out.bias
        f1[li] = f1_score(y, pred[li], average="macro")
    acc = fold_acc.mean(1)
    half = _t95(len(splits)) * fold_acc.std(1, ddof=1) / np.sqrt(len(splits))
    majority = float(np.bincount(y).max() / n_u)
    return ProbeResult(
        layers,
        tuple(classes),
        acc,
        acc - half,
        acc + half,
        fold_acc,
        f1,
        ctrl,
        majority,
        pred,
        scores,
        y,
        weights,
        bias,
        folds,
        method,
    )


def confusion(result: ProbeResult, layer: int) -> np.ndarray:
    """(n_classes, n_classes) counts: rows = true class, columns = predicted."""
    li = result.layers.index(layer)
    nc = len(result.classes)
    m = np.zeros((nc, nc), int)
    np.add.at(m, (result.y, result.pred[li]), 1)
    return m


def misclassified(result: ProbeResult, layer: int) -> np.ndarray:
    """Unit indices the probe gets wrong at ``layer``, most confident mistakes first."""
    li = result.layers.index(layer)
    wrong = np.flatnonzero(result.pred[li] != result.y)
    conf = result.scores[li, wrong, result.pred[li, wrong]]
    return wrong[np.argsort(-conf, kind="stable")]
