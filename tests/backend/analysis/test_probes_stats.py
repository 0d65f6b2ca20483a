import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from backend.analysis import probes as PR
from backend.analysis import stats as ST

RNG = np.random.default_rng(2)


def _data(n_prompts=40, tokens=3, d=6):
    y_prompt = np.arange(n_prompts) % 2
    groups = np.repeat(np.arange(n_prompts), tokens)
    y = y_prompt[groups]
    noise = RNG.normal(size=(2, len(y), d))
    noise[1, :, 0] += 3 * (2 * y - 1)  # layer 1 encodes the label
    return noise.astype(np.float32), np.where(y == 1, "b", "a"), groups


def test_probe_accuracy_equals_sklearn_with_the_same_grouped_folds():
    x, labels, groups = _data()
    res = PR.run_probes(x, labels, groups, folds=4)
    y = np.unique(labels, return_inverse=True)[1]
    splits = PR.grouped_folds(y, groups, 4, 0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=200, random_state=0))
    for layer in range(2):
        ref = cross_val_score(clf, x[layer], y, cv=splits).mean()
        assert res.accuracy[layer] == pytest.approx(ref, abs=1e-9)
    assert res.accuracy[1] > 0.9 and res.ci_low[1] <= res.accuracy[1] <= res.ci_high[1]
    assert res.majority == 0.5 and res.control[1] < 0.8 and res.selectivity[1] > 0.2
    assert PR.confusion(res, 1).sum() == len(labels)


def test_folds_never_split_a_prompt():
    x, labels, groups = _data()
    y = np.unique(labels, return_inverse=True)[1]
    for tr, te in PR.grouped_folds(y, groups, 5):
        assert not set(groups[tr]) & set(groups[te])


def test_probe_input_errors():
    with pytest.raises(ValueError, match="two different labels"):
        PR.run_probes(np.zeros((1, 10, 2)), ["a"] * 10, np.arange(10))
    with pytest.raises(ValueError, match="at least 5 prompts"):
        PR.run_probes(np.zeros((1, 4, 2)), ["a", "b"] * 2, [0, 0, 1, 1])


def test_effective_rank_and_anisotropy_by_hand():
    assert ST.effective_rank(np.eye(5)) == pytest.approx(5)
    assert ST.effective_rank(np.outer(np.arange(1, 5), [1, 2, 3])) == pytest.approx(1)
    assert ST.effective_rank(np.diag([3.0, 1.0])) == pytest.approx(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))
    assert ST.anisotropy(np.eye(4)) == pytest.approx(0)
    assert ST.anisotropy(np.ones((3, 2)) * [[1], [2], [5]]) == pytest.approx(1)
    x = np.array([[1.0, 0], [0, 1], [1, 1]])
    pairs = [0, np.sqrt(0.5), np.sqrt(0.5)]
    assert ST.anisotropy(x) == pytest.approx(np.mean(pairs))


def test_layer_stats_finds_the_massive_activation():
    x = RNG.normal(size=(2, 10, 8)).astype(np.float32)
    x[1, 7, 3] = 500.0
    st = ST.layer_stats(x)
    assert (st.massive_dim[1], st.massive_unit[1]) == (3, 7)
    assert st.massive_ratio[1] > 100 > st.massive_ratio[0]
