"""Linear probes per layer with grouped cross-validation and controls (pure).

Folds are split by prompt (``groups``): tokens of one prompt never sit on both sides.
Each layer reports mean accuracy with a 95% interval, macro-F1, a majority baseline and a
shuffled-label control (selectivity = accuracy - control), optionally a Hewitt & Liang
control task for token probes (``tokens=``; control selectivity = accuracy - control-task
accuracy), plus out-of-fold predictions and class scores for every unit and the probe refitted
on all units.

The interval (see :func:`pooled_interval`) is a percentile bootstrap over prompts of the
pooled out-of-fold correctness (1000 resamples, fixed seed), or a Wilson interval on the pooled
out-of-fold predictions when there are fewer than ``MIN_BOOT_GROUPS`` prompts, widened by the
training-overlap term of Nadeau & Bengio's corrected fold variance (the probe's own training
variability, which a bootstrap of fixed predictions cannot see: under the null the bootstrap
alone covers chance only ~88%). It is *not* a
t-interval across folds: the training sets of one cross-validation overlap, so fold accuracies
are correlated and such an interval is far too narrow (on 400 prompts of noise it was
[0.484, 0.501] while the binomial half-width is 0.049, and it missed chance 12.7% of the time).

Both probes standardise each training fold (as ``StandardScaler`` would) and solve all folds,
the control and the final fit of one layer together:

- ``logistic``: L2 logistic regression (``LogisticRegression(C)`` objective: binary log-loss or
  multinomial), minimised with scipy's L-BFGS (preconditioned by the features' correlation),
  jointly over the problems, to a gradient tolerance (``converged`` says per layer);
- ``ridge``: ``RidgeClassifier(alpha)`` in closed form from one Gram matrix per layer
  (train Gram = full Gram - test Gram), exact.

Both are checked against scikit-learn's ``cross_val_score`` in the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from backend.analysis import linear

log = logging.getLogger(__name__)
METHODS = ("logistic", "ridge")
MIN_BOOT_GROUPS = 20  #: below this many prompts the interval is Wilson on pooled predictions
N_BOOT = 1000  #: bootstrap resamples of prompts for the interval
#: seeded draws of the control task's type labels, averaged (one draw ranged 0.14-0.23 in
#: control selectivity at demo depth layer 4 over seeds 0-7)
CONTROL_DRAWS = 5


@dataclass(frozen=True)
class ProbeResult:
    layers: tuple[int, ...]
    classes: tuple[str, ...]
    accuracy: np.ndarray  #: (n_layers,) mean out-of-fold accuracy over folds
    ci_low: np.ndarray  #: (n_layers,) 95% interval of the accuracy (see ``interval_method``)
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
    #: (n_layers,) share of all units predicted right out of fold (what the interval is about)
    pooled_accuracy: np.ndarray | None = None
    #: how ci_low/ci_high were computed, e.g. "bootstrap over 400 prompts (1000 resamples)"
    interval_method: str = ""
    #: (n_layers,) accuracy of the same probe on a Hewitt & Liang control task (token probes
    #: given ``tokens``), the mean over ``control_task_draws``' seeded draws; None when not
    #: computed
    control_task: np.ndarray | None = None
    #: (n_layers,) bool: every logistic fit of the layer (folds, controls, final) met the
    #: solver's tolerance; None for ridge (closed form)
    converged: np.ndarray | None = None
    #: (n_layers, n_draws) control-task accuracy of each seeded draw of the type labels
    control_task_draws: np.ndarray | None = None

    def __post_init__(self):
        n_l, n_u = self.pred.shape
        if self.scores.shape != (n_l, n_u, len(self.classes)) or len(self.layers) != n_l:
            raise ValueError("inconsistent probe result shapes")

    @property
    def selectivity(self) -> np.ndarray:
        """(n_layers,) accuracy - shuffled-label control."""
        return self.accuracy - self.control

    @property
    def control_task_sd(self) -> np.ndarray | None:
        """(n_layers,) standard deviation of the control-task accuracy over its draws."""
        d = self.control_task_draws
        return None if d is None or d.shape[1] < 2 else d.std(1, ddof=1)

    @property
    def control_selectivity(self) -> np.ndarray | None:
        """(n_layers,) accuracy - control-task accuracy (Hewitt & Liang); None without it."""
        return None if self.control_task is None else self.accuracy - self.control_task

    def best_layer(self) -> int:
        return self.layers[int(np.argmax(self.accuracy))]

    def first_decodable(self, margin: float = 0.05) -> int | None:
        """First layer whose interval lies ``margin`` above both the majority and the control."""
        ok = self.ci_low > np.maximum(self.majority, self.control) + margin
        return self.layers[int(np.argmax(ok))] if ok.any() else None


def grouped_folds(y: np.ndarray, groups: np.ndarray, k: int, seed: int = 0):
    """``k`` (train, test) index pairs that keep each group (prompt) on one side and balance
    the classes across test folds (stratified group k-fold, in numpy; scikit-learn's import
    alone cost the cold `probe` 1.6 s).

    Groups are visited in a seeded random order, largest class spread first, and each goes
    to the fold where the classes' shares of their totals vary least across folds (ties: the
    smaller fold, then the lower index), as scikit-learn's StratifiedGroupKFold does; a fold
    still empty when only as many groups remain as empty folds gets the next group.
    """
    y, groups = np.asarray(y), np.asarray(groups)
    _, g = np.unique(groups, return_inverse=True)
    n_groups = int(g.max()) + 1 if len(g) else 0
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    if n_groups < k:
        raise ValueError(f"need at least {k} prompts for {k}-fold cross-validation, got {n_groups}")
    _, yi = np.unique(y, return_inverse=True)
    counts = np.zeros((n_groups, int(yi.max()) + 1))
    np.add.at(counts, (g, yi), 1)
    totals = counts.sum(0)
    order = np.random.default_rng(seed).permutation(n_groups)
    order = order[np.argsort(-counts[order].std(1), kind="stable")]
    per_fold = np.zeros((k, counts.shape[1]))
    fold_of = np.empty(n_groups, np.int64)
    for left, gi in enumerate(order[::-1]):  # left = groups still to place after this one
        trial = per_fold + counts[gi]  # (k, classes): every fold with the group added
        spread = np.empty(k)
        for f in range(k):
            shares = per_fold.copy()
            shares[f] = trial[f]
            spread[f] = (shares / totals).std(0).mean()
        size = per_fold.sum(1)
        empty = size == 0
        allowed = empty if empty.sum() > left else np.ones(k, bool)
        ranked = np.lexsort((np.arange(k), size, spread.round(12)))
        f = int(next(i for i in ranked if allowed[i]))
        per_fold[f] += counts[gi]
        fold_of[gi] = f
    unit_fold = fold_of[g]
    idx = np.arange(len(y))
    return [(idx[unit_fold != f], idx[unit_fold == f]) for f in range(k)]


def macro_f1(y: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes of F1 = 2 tp / (2 tp + fp + fn); a class never true nor
    predicted scores 0 (scikit-learn's ``f1_score(average="macro")`` over the labels seen)."""
    seen = np.union1d(np.unique(y), np.unique(pred))
    tp = np.bincount(y[y == pred], minlength=n_classes)[seen]
    true = np.bincount(y, minlength=n_classes)[seen]
    guessed = np.bincount(pred, minlength=n_classes)[seen]
    den = true + guessed
    return float(np.mean(np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 0.0)))


def wilson(k, n, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion k / n (arrays broadcast)."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    k, n = np.asarray(k, float), np.asarray(n, float)
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z / den * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def pooled_interval(
    correct,
    groups,
    fold_accuracy=None,
    n_boot: int = N_BOOT,
    seed: int = 0,
    level: float = 0.95,
    min_groups: int = MIN_BOOT_GROUPS,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Interval for the pooled out-of-fold accuracy of each layer.

    correct: (n_layers, n_units) bool, out-of-fold prediction right; groups: (n_units,) the
    prompt of each unit. With at least ``min_groups`` prompts: percentile bootstrap that
    resamples *prompts* with replacement (all units of a drawn prompt come along, so tokens of
    one prompt are not treated as independent), ``n_boot`` resamples with a fixed ``seed``,
    vectorised as one (n_boot, n_prompts) matrix of multinomial counts. With fewer prompts the
    bootstrap is too coarse and the Wilson score interval on the pooled predictions is used.

    ``fold_accuracy`` (n_layers, folds) adds the probe's training variability, which a
    bootstrap of fixed predictions cannot see: the interval is widened about the pooled
    accuracy p by sqrt((v + s^2 / (k - 1)) / v), where v is the bootstrap (or binomial)
    variance and s^2 the variance of the k fold accuracies. This is Nadeau & Bengio's (2003)
    corrected variance of cross-validation, (1/k + n_test/n_train) s^2, with its test-sampling
    part s^2/k replaced by the bootstrap over prompts and its training-overlap part
    n_test/n_train s^2 = s^2/(k - 1) kept. Under the null (random features, balanced labels,
    400 prompts) the bootstrap alone covers chance ~88% of the time, this ~95%.
    Returns (low, high, description).
    """
    correct = np.atleast_2d(np.asarray(correct, bool))
    p = correct.mean(1)
    _, g = np.unique(np.asarray(groups), return_inverse=True)
    n_groups, n_units = int(g.max()) + 1, correct.shape[1]
    a = (1 - level) / 2
    plus = "" if fold_accuracy is None else " + fold variance"
    if n_groups < min_groups or n_boot < 1:
        lo, hi = wilson(correct.sum(1), n_units, level)
        how = f"Wilson on {n_units} pooled out-of-fold predictions ({n_groups} prompts){plus}"
        v = p * (1 - p) / n_units
        return (*_widen(p, lo, hi, v, fold_accuracy), how)
    per_group = np.zeros((n_groups, correct.shape[0]))
    np.add.at(per_group, g, correct.T.astype(float))
    sizes = np.bincount(g, minlength=n_groups).astype(float)
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=n_boot).astype(float)
    boots = (w @ per_group) / (w @ sizes)[:, None]  # (n_boot, n_layers)
    lo, hi = np.quantile(boots, [a, 1 - a], axis=0)
    how = f"bootstrap over {n_groups} prompts ({n_boot} resamples){plus}"
    return (*_widen(p, lo, hi, boots.var(0), fold_accuracy), how)


def _widen(p, lo, hi, v, fold_accuracy) -> tuple[np.ndarray, np.ndarray]:
    """Scale the interval's arms about p by sqrt((v + s^2 / (k - 1)) / v)."""
    if fold_accuracy is None:
        return lo, hi
    fa = np.atleast_2d(np.asarray(fold_accuracy, float))
    k = fa.shape[1]
    vf = fa.var(1, ddof=1) / (k - 1) if k > 1 else np.zeros(len(fa))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(v > 0, np.sqrt((v + vf) / np.where(v > 0, v, 1)), 1.0)
    return np.clip(p - (p - lo) * f, 0, 1), np.clip(p + (hi - p) * f, 0, 1)


def shuffled_labels(y: np.ndarray, seed: int = 0) -> np.ndarray:
    """The shuffled control: the same labels randomly reassigned to units (class balance kept)."""
    return np.random.default_rng(seed).permutation(y)


def control_task_labels(tokens, labels, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang (2019) control task: every word type (distinct token string) gets one
    random label, drawn independently from the empirical label distribution of the units.

    tokens, labels: (n_units,). Returns (n_units,) labels of the same kind as ``labels``:
    units of the same type share their control label. A probe can only score well on it by
    memorising types, so accuracy - control-task accuracy (selectivity) is what the
    representation adds beyond word identity.
    """
    tokens = np.asarray(tokens).astype(str)
    labels = np.asarray(labels)
    if tokens.shape != labels.shape or tokens.ndim != 1:
        raise ValueError("one token per label is needed")
    types, t_idx = np.unique(tokens, return_inverse=True)
    classes, counts = np.unique(labels, return_counts=True)
    rng = np.random.default_rng(seed)
    draw = rng.choice(len(classes), size=len(types), p=counts / counts.sum())
    return classes[draw[t_idx]]


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
    max_iter: int = 3000,
    tol: float = 1e-4,
    tokens=None,
    n_boot: int = N_BOOT,
    control_draws: int = CONTROL_DRAWS,
) -> ProbeResult:
    """Probe every layer of ``x`` (n_layers, n_units, d) for ``labels`` (n_units,), with
    folds that keep each ``groups`` value (n_units,; the prompt) on one side.

    ``C`` is the inverse L2 strength of the logistic probe, ``alpha`` the ridge penalty;
    the logistic fits iterate to ``tol`` (at most ``max_iter`` L-BFGS steps; ``converged``
    says per layer whether they got there), each layer starting from the one below.
    ``tokens`` (n_units,; the token string of each unit) adds the control task
    (:func:`control_task_labels`, same folds and probe): ``control_task`` and
    ``control_selectivity`` of the result, the mean over ``control_draws`` draws (seeds
    ``seed``, ``seed + 1``, ...; each in ``control_task_draws``, spread ``control_task_sd``). ``ci_low``/``ci_high``: :func:`pooled_interval`
    with the fold accuracies (described in ``interval_method``).
    """
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
    if tokens is not None and len(tokens) != len(labels):
        raise ValueError("one token per unit is needed for the control task")
    splits = grouped_folds(y, groups, folds, seed)
    y_ctrl = shuffled_labels(y, seed)
    if control_draws < 1:
        raise ValueError("control_draws must be at least 1")
    y_task = (
        None
        if tokens is None
        else [control_task_labels(tokens, y, seed + i) for i in range(control_draws)]
    )
    n_l, n_u, nc = x.shape[0], len(y), len(classes)
    rows = 1 if nc == 2 else nc
    tests = [te for _, te in splits]
    fold_acc, ctrl = np.zeros((n_l, len(splits))), np.zeros(n_l)
    pred, scores = np.zeros((n_l, n_u), np.int64), np.zeros((n_l, n_u, nc), np.float32)
    weights = np.zeros((n_l, rows, x.shape[2]), np.float32)
    bias = np.zeros((n_l, rows), np.float32)
    f1 = np.zeros(n_l)
    task = None if y_task is None else np.zeros((n_l, control_draws))
    fit = linear.logistic_layer if method == "logistic" else linear.ridge_layer
    opts = {"C": C, "max_iter": max_iter, "tol": tol} if method == "logistic" else {"alpha": alpha}
    conv = np.ones(n_l, bool) if method == "logistic" else None
    start = start_task = None  # logistic: each layer starts from the layer below's solution
    for li in range(n_l):
        out = fit(x[li], y, y_ctrl, tests, nc, **opts, **_warm(method, start))
        start = out.start
        for f, te in enumerate(tests):
            s = out.test_scores[f]
            pred[li, te] = s.argmax(1)
            scores[li, te] = s
            fold_acc[li, f] = (pred[li, te] == y[te]).mean()
        ctrl[li] = np.mean(
            [(out.control_pred[f] == y_ctrl[te]).mean() for f, te in enumerate(tests)]
        )
        weights[li], bias[li] = out.weights, out.bias
        if task is not None:  # two draws per fit: as the "true" and the "shuffled" labels
            for i in range(0, control_draws, 2):
                a, b = y_task[i], y_task[min(i + 1, control_draws - 1)]
                ct = fit(x[li], a, b, tests, nc, **opts, **_warm(method, start_task))
                start_task = ct.start
                out = replace(out, converged=out.converged and ct.converged)
                task[li, i] = np.mean(
                    [(s.argmax(1) == a[te]).mean() for s, te in zip(ct.test_scores, tests)]
                )
                if i + 1 < control_draws:
                    task[li, i + 1] = np.mean(
                        [(p == b[te]).mean() for p, te in zip(ct.control_pred, tests)]
                    )
        f1[li] = macro_f1(y, pred[li], nc)
        if conv is not None:
            conv[li] = out.converged
    acc = fold_acc.mean(1)
    correct = pred == y
    lo, hi, how = pooled_interval(correct, groups, fold_acc, n_boot=n_boot, seed=seed)
    majority = float(np.bincount(y).max() / n_u)
    return ProbeResult(
        layers,
        tuple(classes),
        acc,
        lo,
        hi,
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
        correct.mean(1),
        how,
        None if task is None else task.mean(1),
        conv,
        task,
    )


def _warm(method: str, start) -> dict:
    return {"start": start} if method == "logistic" else {}


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


@dataclass(frozen=True)
class LayerErrors:
    """Units the probe gets wrong (or nearly wrong) at one layer, followed across every layer:
    the error analysis "where in the layers does each prompt go wrong"."""

    units: np.ndarray  #: (k,) unit indices, ordered by ``settles`` then by mean margin
    margin: np.ndarray  #: (k, n_layers) out-of-fold score of the true class minus the best
    #: other class's: > 0 the probe is right there, < 0 wrong
    right: np.ndarray  #: (k, n_layers) bool, the out-of-fold prediction is the true class
    settles: np.ndarray  #: (k,) index of the first layer from which the unit stays right up
    #: to the last layer; n_layers = wrong at the last layer
    wrong_at: np.ndarray  #: (k,) bool: wrong at the inspected layer (else borderline)


def layer_errors(
    result: ProbeResult, layer: int, borderline: float = 0.1, max_units: int = 80
) -> LayerErrors:
    """The units wrong at ``layer`` (the most confident mistakes first when more than
    ``max_units``) and the borderline ones (right with a margin below ``borderline``), each
    with its margin at every layer, sorted by the first layer from which it stays right."""
    li = result.layers.index(layer)
    n_l, n_u = result.pred.shape
    idx = np.arange(n_u)
    s = result.scores
    true = s[:, idx, result.y]  # (L, U)
    others = s.copy()
    others[:, idx, result.y] = -np.inf
    margin = true - others.max(axis=2)  # one class: -inf -> every unit right
    right = result.pred == result.y[None, :]
    wrong = misclassified(result, layer)
    near = np.flatnonzero(right[li] & (margin[li] < borderline))
    near = near[np.argsort(margin[li, near], kind="stable")]
    picked = np.concatenate([wrong, near])[:max_units]
    r = right[:, picked]
    stays = np.flip(np.logical_and.accumulate(np.flip(r, 0), axis=0), 0)  # right from l to end
    settles = np.where(stays.any(axis=0), stays.argmax(axis=0), n_l)
    m = margin[:, picked]
    order = np.lexsort((-m.mean(axis=0), settles))
    picked = picked[order]
    return LayerErrors(
        units=picked,
        margin=margin[:, picked].T,
        right=right[:, picked].T,
        settles=settles[order],
        wrong_at=~right[li, picked],
    )
