"""Probes view: the control task reaches token probes, the interval says what it is, and
encoders pool by mean by default."""

import numpy as np
import pandas as pd
import pytest

from backend.figures.probes import probe_figure
from backend.views import probes as PV


def _fake_units(monkeypatch, unit_tokens):
    """Token units whose label is a function of the token type (a probe that memorises words
    scores as well on the control task: selectivity against it ~ 0)."""
    rng = np.random.default_rng(0)
    n = len(unit_tokens)
    x = rng.normal(size=(2, n, 8)).astype(np.float32)
    types = sorted(set(unit_tokens))
    onehot = np.eye(len(types), 8)[[types.index(t) for t in unit_tokens]]
    x[1] += 3 * onehot.astype(np.float32)
    labels = np.array(["a" if types.index(t) % 2 else "b" for t in unit_tokens])
    groups = np.arange(n) // 4
    meta = pd.DataFrame(
        {
            "run_id": [f"r{g}" for g in groups],
            "idx": groups,
            "text": "t",
            "label": labels,
            "group": None,
            "pos": np.arange(n) % 4,
            "token": unit_tokens,
        }
    )
    monkeypatch.setattr(
        PV, "probe_units", lambda store, req, model_id=None: (x, labels, groups, meta)
    )
    monkeypatch.setattr(
        PV.units, "set_runs_or_error", lambda store, s, m: pd.DataFrame({"run_id": range(n // 4)})
    )


def test_token_probes_carry_the_control_task(monkeypatch):
    toks = [f"w{i % 6}" for i in range(96)]
    _fake_units(monkeypatch, toks)
    req = PV.Request(
        model_id="m", set_name="s", unit="token", folds=3, method="ridge", layers=(0, 1)
    )
    res = PV.compute(None, req)
    assert res.probe.control_task is not None
    d = res.to_dict()
    assert len(d["control_task"]) == len(d["control_selectivity"]) == 2
    np.testing.assert_allclose(
        d["control_selectivity"], np.round(res.probe.accuracy - res.probe.control_task, 4)
    )
    assert d["interval_method"].startswith("bootstrap over 24 prompts")
    frame = res.to_frame()
    assert {"control_task", "control_selectivity", "interval_method"} <= set(frame.columns)
    # the label is the token type: memorising types does as well on the control task's
    # labels, so at the layer that encodes the type the control task is far above chance
    assert res.probe.control_task[1] > 0.7
    fig = probe_figure(res.probe)
    names = [t.name for t in fig.data]
    assert any(n and n.startswith("control task") for n in names)
    assert any(n == "95% interval (bootstrap over 24 prompts)" for n in names)
    hover = next(t for t in fig.data if t.name == "probe accuracy").hovertext[1]
    assert "control task" in hover and "selectivity vs task" in hover


def test_prompt_probes_have_no_control_task(monkeypatch):
    toks = [f"w{i % 6}" for i in range(96)]
    _fake_units(monkeypatch, toks)
    res = PV.compute(None, PV.Request(model_id="m", set_name="s", folds=3, method="ridge"))
    d = res.to_dict()
    assert d["control_task"] is None and d["pool"] == "last"
    assert not any((t.name or "").startswith("control task") for t in probe_figure(res.probe).data)


@pytest.mark.parametrize(
    "row, pool",
    [
        ({"architecture": "BertModel", "has_lm_head": False, "is_causal": False}, "mean"),
        ({"architecture": "RobertaForMaskedLM", "has_lm_head": True}, "mean"),
        ({"architecture": "GPT2LMHeadModel", "has_lm_head": True, "is_causal": True}, "last"),
        ({"architecture": "LlamaForCausalLM", "has_lm_head": True, "is_causal": True}, "last"),
    ],
)
def test_encoders_pool_by_mean_by_default(row, pool):
    assert PV.default_pool(row) == pool
    assert PV.pool_label(pool, row).endswith(PV.POOL_WHY[pool].split(": ", 1)[1])
    other = "last" if pool == "mean" else "mean"
    assert PV.pool_label(other, row).endswith("(chosen)")


@pytest.mark.slow
def test_a_fitted_probe_is_kept_in_the_store_and_refit_when_labels_change(tmp_path, monkeypatch):
    """The second compute (another process: a new Store on the same file) reads the fit from
    the derived cache instead of refitting; a set whose labels changed is fitted again; a
    damaged entry is refitted, never unpickled."""
    from backend.cli import main
    from backend.demo.sets import load_demo_set
    from backend.store import Store

    db = tmp_path / "p.duckdb"
    with Store(db) as s:
        s.save_prompt_set("agr", load_demo_set("agreement").head(60))
    assert main(["extract", "--db", str(db), "--model", "demo", "--set", "agr", "--json"]) == 0
    with Store(db) as s:
        mid = s.find_model("demo")["model_id"]
        req = PV.Request(model_id=mid, set_name="agr", folds=3, method="ridge")
        first = PV.compute(s, req)
    fits = []
    real = PV.run_probes
    monkeypatch.setattr(PV, "run_probes", lambda *a, **k: fits.append(1) or real(*a, **k))
    with Store(db) as s:
        again = PV.compute(s, req)
        assert fits == []  # from the cache
        for k in PV._ARRAYS:
            a, b = getattr(first.probe, k), getattr(again.probe, k)
            assert (a is None and b is None) or np.array_equal(a, b), k
        pd.testing.assert_frame_equal(first.meta, again.meta)
        assert again.to_dict() == first.to_dict()
        # the same texts with other labels: another key, a new fit
        flipped = s.get_set("agr").assign(label=lambda d: d["label"].iloc[::-1].to_numpy())
        s.save_prompt_set("agr", flipped[["text", "label", "group"]])
        PV.compute(s, req)
        assert fits == [1]
        # a damaged entry is refitted
        key = PV._cache_key(s, req, mid)
        s.cache_put(PV.CACHE_KIND, key, b"not an npz")
        PV.compute(s, req)
        assert fits == [1, 1]


def test_layer_errors_rows_follow_each_prompt_across_layers_and_draw(monkeypatch):
    """The error analysis across layers: one row per prompt wrong or borderline at a layer,
    its margin at every layer, its group, ordered by the first layer it stays right from."""
    from backend.analysis.probes import layer_errors
    from backend.figures.probes import errors_figure
    from tests.backend.figures._strings import BOLD, LINK, assert_inert

    rng = np.random.default_rng(1)
    n = 48
    labels = np.array(["sg", "pl"])[np.arange(n) % 2]
    x = rng.normal(size=(3, n, 6)).astype(np.float32)
    x[1, :, 0] += 1.0 * (labels == "pl")  # weak at layer 1, clear at layer 2
    x[2, :, 0] += 6.0 * (labels == "pl")
    meta = pd.DataFrame(
        {
            "run_id": [f"r{i}" for i in range(n)],
            "idx": range(n),
            "text": [f"prompt {i} {LINK if i % 5 == 0 else BOLD}" for i in range(n)],
            "label": labels,
            "group": np.array(["near", "far", "mid"])[np.arange(n) % 3],
        }
    )
    monkeypatch.setattr(
        PV, "probe_units", lambda store, req, model_id=None: (x, labels, np.arange(n), meta)
    )
    monkeypatch.setattr(
        PV.units, "set_runs_or_error", lambda store, s, m: pd.DataFrame({"run_id": range(n)})
    )
    res = PV.compute(None, PV.Request(model_id="m", set_name="s", folds=4, method="ridge"))
    err = res.layer_errors(0)
    e = layer_errors(res.probe, 0)
    assert list(err.columns) == [
        "prompt", "group", "true", "at_layer", "settles", "run_id", "L0", "L1", "L2"
    ]  # fmt: skip
    assert err["run_id"].tolist() == [f"r{u}" for u in e.units]
    np.testing.assert_allclose(err[["L0", "L1", "L2"]].to_numpy(), e.margin)
    assert (err["at_layer"] == "wrong").sum() == len(res.misclassified(0)) > 0
    assert err["group"].tolist() == meta["group"].to_numpy()[e.units].tolist()
    # ordered by the layer each stays right from (a prompt wrong at layer 0 settles later)
    settled = err["settles"].dropna().astype(int)
    assert settled.is_monotonic_increasing and settled.iloc[-1] == 2
    assert not ((err["at_layer"] == "wrong") & (err["settles"] == 0)).any()
    fig = errors_figure(err, 0)
    hm = fig.data[0]
    assert list(hm.x) == [0, 1, 2] and len(hm.y) == len(err) and len(set(hm.y)) == len(err)
    assert hm.zmid == 0 and hm.y[0].startswith("1. [")
    found = assert_inert(fig)
    assert any("right from layer: 2" in s for s in found)


def test_cached_never_fits_and_prompt_row_gives_every_layer_s_verdict(monkeypatch):
    class Cache:  # the store's derived cache and the model's layer count, nothing else
        def __init__(self):
            self.d = {}

        def get_model(self, model_id):
            return {"n_layers": 1}

        def cache_get(self, kind, key):
            return self.d.get((kind, key))

        def cache_put(self, kind, key, payload):
            self.d[(kind, key)] = payload

    toks = [f"w{i % 6}" for i in range(96)]
    _fake_units(monkeypatch, toks)
    store, req = Cache(), PV.Request(model_id="m", set_name="s", folds=3, method="ridge")
    assert PV.cached(store, req) is None and not store.d  # nothing stored: nothing fitted
    res = PV.compute(store, req)
    again = PV.cached(store, req)
    np.testing.assert_array_equal(again.probe.pred, res.probe.pred)
    r = res.probe
    for g in (0, 5):
        u = int(np.flatnonzero(again.meta["run_id"].to_numpy() == f"r{g}")[0])
        row = PV.prompt_row(again, f"r{g}")
        assert row["layer"].tolist() == list(r.layers)
        assert (row["verdict"] == np.where(r.pred[:, u] == r.y[u], "right", "wrong")).all()
        assert ((row["margin"] > 0) == (row["verdict"] == "right")).all()
    assert PV.prompt_row(again, "nope").empty


def test_a_logistic_probe_that_stops_early_says_so(monkeypatch):
    from backend.analysis import probes as AP

    toks = [f"w{i % 6}" for i in range(96)]
    _fake_units(monkeypatch, toks)
    req = PV.Request(model_id="m", set_name="s", folds=3, layers=(0, 1))
    done = PV.compute(None, req)
    assert done.warning is None and done.to_dict()["converged"] == [True, True]
    capped = AP.run_probes
    monkeypatch.setattr(PV, "run_probes", lambda *a, **k: capped(*a, **k, max_iter=1))
    res = PV.compute(None, req)
    assert res.to_dict()["converged"] == [False, False]
    assert "did not converge at layers 0, 1" in res.to_dict()["warning"]


def test_mean_pooling_leaves_specials_out_and_mean_all_keeps_them(db, tiny_model_dir, tmp_path):
    """Against each run's own stored layers: 'mean' = mean over the non-special tokens,
    'mean-all' = mean over every token incl. [CLS]/[SEP] (sentence-transformers')."""
    from backend.cli import main
    from backend.store import Store
    from backend.views import units

    path = str(tiny_model_dir("bert"))
    f = tmp_path / "p.csv"
    f.write_text("text,label\nthe cat runs,a\nthe dog sits down,b\na cat,a\n")
    argv = ["extract", "--model", path, "--prompts", str(f), "--set", "p", "--label-column"]
    assert main([*argv, "label", "--json"]) == 0
    with Store(str(db)) as s:
        mid = s.find_model(path)["model_id"]
        runs = units.set_runs_or_error(s, "p", mid)
        mean, _ = units.prompt_units(s, runs, [0, 1], "mean")
        every, _ = units.prompt_units(s, runs, [0, 1], "mean-all")
        for j, r in enumerate(runs["run_id"]):
            h = s.run_layers(r)[[0, 1]]
            special = s.tokens(r)["is_special"].to_numpy(bool)
            assert special.any()  # [CLS] (the tiny tokenizer adds no [SEP])
            np.testing.assert_allclose(every[:, j], h.mean(1), atol=1e-5)
            np.testing.assert_allclose(mean[:, j], h[:, ~special].mean(1), atol=1e-5)
        assert not np.allclose(mean, every)
    assert PV.Request(model_id="m", set_name="p", pool="mean-all").pool == "mean-all"
    assert "sentence-transformers" in PV.pool_label("mean-all", {"is_causal": False})
