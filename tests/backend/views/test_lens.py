"""Lens view: the tuned lens is trained from the cached states of a set, stored in the derived
cache, read back without training, and beats the logit lens on held-out prompts."""

import numpy as np
import pytest

from backend import models
from backend.cli import main
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import lens as LV
from tests.backend.commands.test_readout_commands import extract, labelled, run_json  # noqa: F401


@pytest.fixture
def tiny(db, labelled, tiny_model_dir):  # noqa: F811
    model = str(tiny_model_dir("gpt2"))
    extract(model, labelled)
    return model, db


@pytest.mark.slow
def test_tuned_lens_view_trains_stores_and_beats_the_logit_lens(tiny, monkeypatch):
    model, db = tiny
    # fewer steps than the default's cap keep the test fast; early stopping is the same
    monkeypatch.setattr(LV, "TUNED_SETTINGS", {**LV.TUNED_SETTINGS, "steps": 300,
                                               "eval_every": 25})  # fmt: skip
    lm = models.get_model(model, "auto", "cpu")
    with Store(str(db)) as store:
        model_id = store.find_model(model)["model_id"]
        req = LV.Request(model_id=model_id, set_name="lab", positions="all", kind="tuned")
        assert LV.load_tuned(store, model_id, "lab") is None
        with pytest.raises(LayerScopeError, match="train one first"):
            LV.compute_set(store, lm, req)  # reading never trains
        tl = LV.train_tuned(store, lm, model_id, "lab")
        again = LV.load_tuned(store, model_id, "lab")
        np.testing.assert_array_equal(again.weight, tl.weight)
        other = {**LV.TUNED_SETTINGS, "steps": 10}
        assert LV.load_tuned(store, model_id, "lab", other) is None  # settings are in the key
        res = LV.compute_set(store, lm, req)
        d = res.to_dict()
        assert d["lens"] == "tuned" and d["n_test"] == 6 and d["n_train"] == 18
        early = slice(0, -1)
        kl_t, kl_l = np.array(d["kl_tuned_heldout"]), np.array(d["kl_logit_heldout"])
        assert (kl_t[early] <= kl_l[early] + 1e-6).all(), (kl_t, kl_l)
        assert kl_t.sum() < kl_l.sum()
        assert list(res.kl_frame().columns) == ["layer", "kl_logit", "kl_tuned"]
        # the summaries are out of sample: over all positions of the held-out prompts they
        # are the lens's own held-out KL (computed apart, in training); in-sample, labelled
        assert "held-out" in d["summary_prompts"]
        np.testing.assert_allclose(d["kl_mean"], tl.kl_tuned, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(d["in_sample"]["kl_mean"], tl.kl_tuned_train, rtol=1e-3,
                                   atol=1e-4)  # fmt: skip
        assert d["n_positions"] + d["in_sample"]["n_positions"] == sum(
            store.get_run(r)["n_tokens"] for r in store.set_runs("lab", model_id)["run_id"]
        )
        # early stopping on the held-out KL: the kept step is the curve's best
        curve = d["kl_curve"]
        assert curve["step"][0] == 0 and d["steps_run"] == curve["step"][-1]
        assert curve["step"] == tl.curve_step.tolist()
        best = tl.curve_step[int(np.argmin(tl.curve_kl))]  # full precision (JSON rounds)
        assert d["best_step"] == best and tl.curve_kl.min() < tl.curve_kl[0]
        assert list(res.curve_frame().columns) == ["step", "heldout_kl"]
        run_id = store.set_runs("lab", model_id)["run_id"].iloc[0]
        tuned = LV.compute_run(store, lm, run_id, kind="tuned", set_name="lab")
        logit = LV.compute_run(store, lm, run_id)
        np.testing.assert_array_equal(tuned.lens.top_ids[-1], logit.lens.top_ids[-1])
        assert not np.allclose(tuned.lens.kl_to_final[0], logit.lens.kl_to_final[0])


@pytest.mark.slow
def test_cli_lens_tuned_trains_if_missing_and_prints_both_kls(tiny, capsys):
    model, _ = tiny
    code, r, _ = run_json(capsys, "lens", "--model", model, "--set", "lab", "--lens", "tuned")
    assert code == 0, r
    assert r["lens"] == "tuned" and len(r["kl_tuned_heldout"]) == len(r["layers"])
    capsys.readouterr()
    assert main(["lens", "--model", model, "--set", "lab", "--lens", "tuned"]) == 0
    out = capsys.readouterr().out
    assert "layer  kl_logit  kl_tuned" in out and "held-out" in out
    code, _, err = run_json(capsys, "lens", "--model", model, "--prompt", "a b", "--lens", "tuned")
    assert code == 2 and "--set NAME with --lens tuned" in err


def test_set_lens_at_last_positions_reads_out_only_the_last_position(tiny):
    """'last' reads one position per prompt; the numbers equal the full readout's last
    position (positions are independent after the store)."""
    from backend.analysis.lens import summarize

    model, db = tiny
    lm = models.get_model(model, "auto", "cpu")
    with Store(str(db)) as store:
        model_id = store.find_model(model)["model_id"]
        got = LV.compute_set(
            store, lm, LV.Request(model_id=model_id, set_name="lab", positions="last")
        ).summary
        runs = store.set_runs("lab", model_id)["run_id"]
        full = summarize([LV.lens_for_hidden(lm, store.run_layers(r), 1) for r in runs], "last")
        assert got.n_positions == full.n_positions == len(runs)
        for a, b in zip(
            (got.kl_mean, got.entropy_mean, got.rank_median, got.agreement, got.commitment_counts),
            (
                full.kl_mean,
                full.entropy_mean,
                full.rank_median,
                full.agreement,
                full.commitment_counts,
            ),
        ):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
