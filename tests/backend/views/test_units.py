"""Unit gathering: a set larger than a view can hold is sampled uniformly without replacement,
with a fixed seed, and says so."""

import numpy as np
import pandas as pd
import pytest

from backend.records import CapturedRun
from backend.store import Store
from backend.views import trajectories as TV
from backend.views import units
from tests.backend.views._fake import fake_info, fake_run

N_LAYERS, D = 2, 4
LENGTHS = (3, 5, 2, 4)  # 14 tokens, the first of each run special


def _run(i: int, n: int) -> CapturedRun:
    """Every vector says which run, position and layer it is: (layer, i, pos, 0)."""
    h = np.zeros((N_LAYERS + 1, n, D), np.float32)
    h[:, :, 0] = np.arange(N_LAYERS + 1)[:, None]
    h[:, :, 1], h[:, :, 2] = i, np.arange(n)
    return fake_run(i, h)


@pytest.fixture
def store():
    with Store(":memory:") as s:
        s.upsert_model(fake_info(N_LAYERS, D))
        runs = [_run(i, n) for i, n in enumerate(LENGTHS)]
        s.ingest("m", runs)
        texts = [r.text for r in runs]
        s.save_prompt_set("s", pd.DataFrame({"text": texts, "label": ["a", "b", "a", "b"]}))
        yield s


def _units(store, **kw):
    runs = units.set_runs_or_error(store, "s", "m")
    return units.token_units(store, runs, [0, 2], skip_special=False, **kw)


def test_under_the_cap_every_token_and_no_notice(store):
    x, meta = _units(store)
    assert x.shape == (2, sum(LENGTHS), D) and units.notice_of(meta) is None


def test_over_the_cap_a_seeded_sample_that_says_so(store, monkeypatch):
    monkeypatch.setattr(units, "MAX_UNITS", 5)
    x, meta = _units(store)
    assert units.notice_of(meta) == "showing 5 of 14 tokens, random sample, seed 0"
    assert x.shape == (2, 5, D) and len(meta) == 5
    assert not meta.duplicated(["run_id", "pos"]).any()  # without replacement
    # each vector is the one its row names (run, position), at each requested layer
    run_no = {r: i for i, r in enumerate(units.set_runs_or_error(store, "s", "m")["run_id"])}
    np.testing.assert_array_equal(x[:, :, 1], [[run_no[r] for r in meta["run_id"]]] * 2)
    np.testing.assert_array_equal(x[:, :, 2], [meta["pos"].to_numpy()] * 2)
    np.testing.assert_array_equal(x[:, :, 0], [[0] * 5, [2] * 5])
    again_x, again = _units(store)  # deterministic
    pd.testing.assert_frame_equal(meta, again)
    np.testing.assert_array_equal(x, again_x)
    _, other = _units(store, seed=1)
    assert units.notice_of(other).endswith("seed 1")


def test_the_sample_is_uniform_without_replacement():
    n, k, seeds = 20, 5, 2000
    counts = np.zeros(n)
    for seed in range(seeds):
        pick = units._pick(n, k, seed)
        assert len(np.unique(pick)) == k and (np.diff(pick) > 0).all()
        counts[pick] += 1
    # inclusion probability k/n = 0.25 each; 4 standard deviations ~ 0.039
    assert np.abs(counts / seeds - k / n).max() < 0.04


def test_prompt_units_and_a_view_say_so(store, monkeypatch):
    monkeypatch.setattr(units, "MAX_UNITS", 3)
    runs = units.set_runs_or_error(store, "s", "m")
    x, meta = units.prompt_units(store, runs, [1])
    assert x.shape == (1, 3, D)
    assert units.notice_of(meta) == "showing 3 of 4 prompts, random sample, seed 0"
    res = TV.compute(
        store,
        TV.Request(
            model_id="m",
            set_name="s",
            layers=(0, 1, 2),
            unit="token",
            max_runs=4,
            standardize=False,
        ),
    )
    assert res.notice == "showing 3 of 10 tokens, random sample, seed 0"  # specials skipped
    assert res.to_dict()["notice"] == res.notice and res.projection.n_units == 3


def _naive_token_units(store, runs, layers, skip_special=True):
    """The reference: every run read whole (all layers), its kept rows, concatenated."""
    xs, metas = [], []
    for r in runs.itertuples():
        toks = store.tokens(r.run_id)
        keep = ~toks["is_special"].to_numpy() if skip_special else np.ones(len(toks), bool)
        xs.append(store.run_layers(r.run_id)[layers][:, keep])
        tl = getattr(r, "token_labels", None)
        label = tl if isinstance(tl, list) and len(tl) == keep.sum() else [r.label] * keep.sum()
        metas.append(pd.DataFrame({"run_id": r.run_id, "pos": toks["pos"][keep], "label": label}))
    return np.concatenate(xs, axis=1), pd.concat(metas, ignore_index=True)


@pytest.mark.parametrize("skip_special", [True, False])
def test_token_units_equal_reading_every_run_whole(store, skip_special):
    """One token-table query and one read per layer give the per-run reads' numbers and
    table, per-token labels included (a run whose labels do not match its tokens keeps its
    prompt label)."""
    runs = units.set_runs_or_error(store, "s", "m").iloc[[2, 0, 3, 1]]
    runs = runs.assign(token_labels=[["p", "q"], None, ["x"] * 3, ["t"] * 4])
    if not skip_special:
        runs["token_labels"] = [["p", "q"], None, ["x"] * 3, ["t"] * 5]
    x, meta = units.token_units(store, runs, [2, 0], skip_special=skip_special)
    ref_x, ref = _naive_token_units(store, runs, [2, 0], skip_special)
    np.testing.assert_array_equal(x, ref_x)
    assert meta["run_id"].tolist() == ref["run_id"].tolist()
    assert meta["pos"].tolist() == ref["pos"].tolist()
    assert meta["label"].tolist() == ref["label"].tolist()


def test_a_sampled_trajectory_reads_only_its_sample(store, monkeypatch):
    """Token units with a sample: the units are drawn from the token table first and only the
    runs holding them are read, one query per layer (never a run's every layer one by one);
    the same units and vectors as reading everything and sampling after."""
    req = TV.Request(
        model_id="m",
        set_name="s",
        layers=(0, 2),
        unit="token",
        max_runs=4,
        sample=3,
        seed=5,
        standardize=False,
    )
    runs = units.set_runs_or_error(store, "s", "m")
    all_x, all_meta = _naive_token_units(store, runs, [0, 2])
    keep = np.sort(np.random.default_rng(5).choice(len(all_meta), 3, replace=False))
    asked = []
    real_rows = store.rows

    def spy(ids, pos, layer):
        asked.append((tuple(ids), layer))
        return real_rows(ids, pos, layer)

    monkeypatch.setattr(store, "rows", spy)
    monkeypatch.setattr(store, "run_layers", lambda *a: pytest.fail("per-run read"))
    x, meta, n_all = TV.load_units(store, req)
    assert n_all == len(all_meta) == 10
    np.testing.assert_array_equal(x, all_x[:, keep])
    assert meta["run_id"].tolist() == all_meta["run_id"].iloc[keep].tolist()
    assert meta["pos"].tolist() == all_meta["pos"].iloc[keep].tolist()
    assert [layer for _, layer in asked] == [0, 2]
    assert all(list(ids) == meta["run_id"].tolist() for ids, _ in asked)  # the sample only


def test_stats_read_each_layer_once_for_every_run(store, monkeypatch):
    """The Stats view (and the Training view, once per checkpoint) reads one query per layer
    for all its runs, never run by run; the same statistics as the per-run reads."""
    from backend.analysis.stats import layer_stats
    from backend.views import stats

    runs = units.set_runs_or_error(store, "s", "m")
    ref_x, ref = _naive_token_units(store, runs, [0, 1, 2], skip_special=False)
    asked = []
    real_rows = store.rows

    def spy(ids, pos, layer):
        asked.append(layer)
        return real_rows(ids, pos, layer)

    monkeypatch.setattr(store, "rows", spy)
    monkeypatch.setattr(store, "run_layers", lambda *a: pytest.fail("per-run read"))
    res = stats.compute(store, stats.Request(model_id="m", set_name="s"))
    assert asked == [0, 1, 2] and res.meta["pos"].tolist() == ref["pos"].tolist()
    want = layer_stats(ref_x, [0, 1, 2])
    for f in ("norm_quantiles", "median_abs", "top_values", "top_units", "effective_rank"):
        np.testing.assert_array_equal(getattr(res.stats, f), getattr(want, f))
