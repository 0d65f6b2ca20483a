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
        oof = cross_val_predict(_sk(method), x[layer], y, cv=splits)
        # a unit whose two best classes sklearn scores within 1e-4 is a tie two solvers may
        # break either way (one such unit with these folds); everything else must agree
        tie = np.zeros(len(y), bool)
        if method == "logistic":
            p = np.sort(
                cross_val_predict(_sk(method), x[layer], y, cv=splits, method="predict_proba")
            )
            tie = p[:, -1] - p[:, -2] < 1e-4
        assert tie.sum() <= 1
        np.testing.assert_array_equal(res.pred[layer][~tie], oof[~tie])
        slack = tie.sum() / min(len(te) for _, te in splits) + 1e-12
        np.testing.assert_allclose(res.fold_accuracy[layer], ref, atol=slack)
        assert res.accuracy[layer] == pytest.approx(ref.mean(), abs=slack)
        if not tie.any():
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
    assert res.interval_method.startswith("bootstrap over 80 prompts")
    assert res.pooled_accuracy[1] == pytest.approx((res.pred[1] == y).mean())
    assert (res.ci_low < res.pooled_accuracy).all() and (res.pooled_accuracy < res.ci_high).all()
    assert res.majority == 0.5
    assert abs(res.control[1] - 0.5) < 0.15 and res.selectivity[1] > 0.15
    assert res.control_task is None and res.control_selectivity is None
    assert PR.confusion(res, 1).sum() == len(y)
    np.testing.assert_allclose(res.scores.sum(-1), 1, atol=1e-5)
    assert res.first_decodable() == 1 and res.best_layer() == 1


def test_bootstrap_resamples_prompts_not_units():
    """Tokens of one prompt move together: the interval of a prompt-level signal repeated on
    many tokens is as wide as that of one unit per prompt, not sqrt(tokens) narrower."""
    rng = np.random.default_rng(0)
    per_prompt = rng.uniform(size=(1, 100)) < 0.7
    lo1, hi1, _ = PR.pooled_interval(per_prompt, np.arange(100))
    lo5, hi5, how = PR.pooled_interval(np.repeat(per_prompt, 5, 1), np.repeat(np.arange(100), 5))
    assert how == "bootstrap over 100 prompts (1000 resamples)"
    assert hi5 - lo5 == pytest.approx(hi1 - lo1, abs=0.02)
    # binomial half-width for n = 100 at p = 0.7 is ~0.09
    assert 0.14 < (hi1 - lo1)[0] < 0.22


def test_few_prompts_fall_back_to_wilson():
    correct = np.array([[1] * 8 + [0] * 2], bool)
    lo, hi, how = PR.pooled_interval(correct, np.arange(10))
    assert how.startswith("Wilson on 10 pooled")
    # Wilson 95% for 8/10, by hand: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n)
    z = 1.959963984540054
    c, h = (
        (0.8 + z * z / 20) / (1 + z * z / 10),
        z * np.sqrt(0.016 + z * z / 400) / (1 + z * z / 10),
    )
    assert (lo[0], hi[0]) == pytest.approx((c - h, c + h))
    assert (lo[0], hi[0]) == pytest.approx((0.4902, 0.9433), abs=1e-4)


def test_interval_is_wider_than_the_old_t_interval_at_the_issue_scale():
    """400 prompts of noise: the t-interval over 5 overlapping folds has 4 degrees of freedom
    and is often far narrower than the binomial +-0.049 (the issue saw [0.484, 0.501]); the
    honest interval never is."""
    rng = np.random.default_rng(5)
    n = 400
    labels = np.array(["a", "b"])[rng.permutation(np.arange(n) % 2)]
    x = rng.normal(size=(12, n, 8)).astype(np.float32)
    res = PR.run_probes(x, labels, np.arange(n), folds=5, method="ridge")
    fa = res.fold_accuracy
    old_half = sps.t.ppf(0.975, 4) * fa.std(1, ddof=1) / np.sqrt(5)
    half = (res.ci_high - res.ci_low) / 2
    binomial = 1.96 * np.sqrt(res.accuracy * (1 - res.accuracy) / n)  # 0.046-0.049 here
    assert (half > 0.95 * binomial).all()
    narrow = old_half < 0.049
    assert narrow.sum() >= 2 and old_half.min() < 0.035
    assert (half[narrow] > old_half[narrow]).all()


@pytest.mark.slow
def test_interval_covers_chance_under_the_null():
    """Random features, balanced random labels, 400 prompts: 240 null probes (8 label draws x
    30 independent feature layers) must contain 0.5 at least 93% of the time (the t-interval
    over folds: ~87%)."""
    rng = np.random.default_rng(0)
    covered = []
    for rep in range(8):
        n = 400
        labels = np.array(["a", "b"])[rng.permutation(np.arange(n) % 2)]
        x = rng.normal(size=(30, n, 8)).astype(np.float32)
        res = PR.run_probes(x, labels, np.arange(n), folds=5, method="ridge", seed=rep)
        covered += list((res.ci_low <= 0.5) & (res.ci_high >= 0.5))
    assert np.mean(covered) >= 0.93


def test_control_task_labels_by_type_with_the_empirical_distribution():
    tokens = np.array(["the", "cat", "the", "sat", "cat", "the"])
    labels = np.array(["DET", "N", "DET", "V", "N", "DET"])
    ct = PR.control_task_labels(tokens, labels, seed=3)
    assert ct[0] == ct[2] == ct[5] and ct[1] == ct[4]  # same type, same control label
    assert set(ct) <= set(labels)
    np.testing.assert_array_equal(ct, PR.control_task_labels(tokens, labels, seed=3))
    # the same draw by hand: types sorted (cat, sat, the), p = empirical label shares
    draw = np.random.default_rng(3).choice(3, size=3, p=[3 / 6, 2 / 6, 1 / 6])
    by_type = dict(zip(["cat", "sat", "the"], np.array(["DET", "N", "V"])[draw]))
    assert ct.tolist() == [by_type[t] for t in tokens]
    # many types: the share of types per label follows the empirical label distribution
    rng = np.random.default_rng(0)
    many = np.array([f"w{i}" for i in range(4000)])
    lab = rng.choice(["a", "b", "c"], size=4000, p=[0.7, 0.2, 0.1])
    got = PR.control_task_labels(many, lab, seed=1)
    shares = np.array([(got == c).mean() for c in "abc"])
    want = np.array([(lab == c).mean() for c in "abc"])
    np.testing.assert_allclose(shares, want, atol=0.03)


def _typed(n_types, label_of_type, n_prompts=60, per_prompt=6, d=16, seed=0):
    """Token units: each prompt has ``per_prompt`` tokens of random types; the vector is the
    type's embedding plus a little noise."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_types, d))
    t = rng.integers(0, n_types, size=n_prompts * per_prompt)
    x = (emb[t] + 0.05 * rng.normal(size=(len(t), d)))[None].astype(np.float32)
    return x, label_of_type(emb)[t], np.repeat(np.arange(n_prompts), per_prompt), t


def test_control_selectivity_near_zero_for_memorisable_types_positive_for_a_signal():
    # 6 types with arbitrary labels: a 16-d probe memorises types, control task as easily
    memo = lambda emb: np.array(["a", "b", "a", "b", "b", "a"])
    x, labels, groups, t = _typed(6, memo)
    res = PR.run_probes(x, labels, groups, folds=5, method="ridge", tokens=[f"t{i}" for i in t])
    assert res.accuracy[0] > 0.95 and abs(res.control_selectivity[0]) < 0.1
    # 300 types whose label is a direction of the embedding: linear signal, types unmemorisable
    sig = lambda emb: np.where(emb[:, 0] > 0, "a", "b")
    x, labels, groups, t = _typed(300, sig)
    res = PR.run_probes(x, labels, groups, folds=5, method="ridge", tokens=[f"t{i}" for i in t])
    assert res.accuracy[0] > 0.9 and res.control_task[0] < 0.7
    assert res.control_selectivity[0] > 0.25
    np.testing.assert_allclose(res.control_selectivity, res.accuracy - res.control_task)


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


@pytest.mark.parametrize("n_classes", [2, 3])
def test_folds_are_stratified_disjoint_and_cover_every_unit(n_classes):
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(120), rng.integers(1, 6, 120))  # prompts of 1-5 tokens
    y = rng.choice(n_classes, len(groups), p=[0.6, 0.4] if n_classes == 2 else [0.5, 0.3, 0.2])
    folds = PR.grouped_folds(y, groups, 5, seed=3)
    tests = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(y)))  # disjoint, covering
    overall = np.bincount(y, minlength=n_classes) / len(y)
    for tr, te in folds:
        np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
        assert not set(groups[tr]) & set(groups[te])
        assert 0.15 < len(te) / len(y) < 0.25
        share = np.bincount(y[te], minlength=n_classes) / len(te)
        assert np.abs(share - overall).max() < 0.05  # stratified
    again = PR.grouped_folds(y, groups, 5, seed=3)
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))  # deterministic
    other = PR.grouped_folds(y, groups, 5, seed=4)
    assert any(len(a[1]) != len(b[1]) or (a[1] != b[1]).any() for a, b in zip(folds, other))


def test_folds_are_never_empty_when_groups_are_few_and_lopsided():
    groups = np.array([0] * 50 + [1, 2, 3, 4])
    y = np.array([0] * 50 + [1, 1, 1, 1])
    folds = PR.grouped_folds(y, groups, 5)
    assert all(len(te) > 0 and len(tr) > 0 for tr, te in folds)


def test_macro_f1_equals_sklearn():
    rng = np.random.default_rng(0)
    for nc in (2, 3, 4):
        y, pred = rng.integers(0, nc, 200), rng.integers(0, nc, 200)
        pred[pred == nc - 1] = 0  # one class never predicted
        assert PR.macro_f1(y, pred, nc) == pytest.approx(f1_score(y, pred, average="macro"))


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


@pytest.mark.parametrize("n_classes", [2, 3])
def test_layer_errors_follow_each_wrong_or_borderline_unit_across_layers(n_classes):
    """Checked against a plain loop over units and layers."""
    x, labels, groups, y = _data(n_classes=n_classes)
    res = PR.run_probes(x, labels, groups, folds=4)
    L = len(res.layers)
    for layer in res.layers:
        li = res.layers.index(layer)
        e = PR.layer_errors(res, layer, borderline=0.2, max_units=10_000)
        want, margins, settle = [], {}, {}
        for u in range(len(y)):
            m = []
            for k in range(L):
                s = res.scores[k, u]
                m.append(s[y[u]] - max(s[c] for c in range(len(s)) if c != y[u]))
            right = [res.pred[k, u] == y[u] for k in range(L)]
            if not right[li] or m[li] < 0.2:
                want.append(u)
            margins[u] = m
            settle[u] = next((k for k in range(L) if all(right[k:])), L)
        assert sorted(e.units.tolist()) == sorted(want)
        for row, u in enumerate(e.units):
            np.testing.assert_allclose(e.margin[row], margins[u], atol=1e-12)
            assert e.settles[row] == settle[u]
            assert e.wrong_at[row] == (res.pred[li, u] != y[u])
            assert (e.right[row] == (res.pred[:, u] == y[u])).all()
        keys = [(settle[u], -np.mean(margins[u])) for u in e.units]
        assert keys == sorted(keys)
    wrong0 = PR.misclassified(res, res.layers[0])
    assert len(wrong0) >= 3  # layer 0 of _data is noise
    capped = PR.layer_errors(res, res.layers[0], borderline=0.2, max_units=3)
    assert set(capped.units) == set(wrong0[:3])  # the most confident mistakes kept


def _hard_multiclass(n_prompts=150, tokens=4, d=48, nc=5, seed=0):
    """Five overlapping classes in correlated, badly scaled features (a weakly regularised
    fit needs several hundred L-BFGS steps)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_prompts), tokens)
    y = rng.integers(0, nc, len(groups))
    z = rng.normal(size=(len(y), d)) + (rng.normal(size=(nc, d)) * 0.3)[y]
    x = z @ (rng.normal(size=(d, d)) * np.geomspace(1, 30, d)) + rng.normal(size=d) * 20
    return x[None].astype(np.float32), np.array(list("abcde"))[y], groups, y


@pytest.mark.slow
def test_multiclass_logistic_iterates_to_sklearns_accuracy_and_reports_convergence():
    x, labels, groups, y = _hard_multiclass()
    splits = PR.grouped_folds(y, groups, 5, 0)
    sk = make_pipeline(StandardScaler(), LogisticRegression(C=10, max_iter=20_000, tol=1e-8))
    ref = cross_val_score(sk, x[0], y, cv=splits)
    res = PR.run_probes(x, labels, groups, C=10, n_boot=0)  # the defaults: to tolerance
    assert abs(res.accuracy[0] - ref.mean()) <= 0.002
    assert res.converged.tolist() == [True]
    capped = PR.run_probes(x, labels, groups, C=10, n_boot=0, max_iter=5)
    assert capped.converged.tolist() == [False]
    assert PR.run_probes(x, labels, groups, method="ridge", n_boot=0).converged is None


@pytest.mark.parametrize("method", ["logistic", "ridge"])
def test_control_task_is_the_mean_of_its_seeded_draws(method):
    """Each draw against scikit-learn on that draw's type labels (seeds 0, 1, 2), same folds;
    the reported control task is their mean and its spread their SD."""
    x, labels, groups, y = _data(n_classes=3)
    tokens = np.array([f"t{i % 9}" for i in range(len(y))])
    res = PR.run_probes(x, labels, groups, folds=4, method=method, tokens=tokens, n_boot=0,
                        control_draws=3, tol=1e-7)  # fmt: skip
    splits = PR.grouped_folds(y, groups, 4, 0)
    assert res.control_task_draws.shape == (2, 3)
    for layer in range(2):
        ref = [
            cross_val_score(
                _sk(method), x[layer], PR.control_task_labels(tokens, y, i), cv=splits
            ).mean()
            for i in range(3)
        ]
        np.testing.assert_allclose(res.control_task_draws[layer], ref, atol=0.02)
    np.testing.assert_allclose(res.control_task, res.control_task_draws.mean(1))
    np.testing.assert_allclose(res.control_task_sd, res.control_task_draws.std(1, ddof=1))
    assert len(set(res.control_task_draws[1].round(6))) > 1  # the draws differ
