"""The Training view: its numbers are the per-model views' numbers on each checkpoint, its
behaviour matches the demo's evidence script, and the CLI prints them as strict JSON."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from backend import models
from backend.cli import main
from backend.demo.sets import load_demo_set
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import probes, similarity, stats, training
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not models.checkpoints("demo"), reason="no bundled demo checkpoints"),
]
STEPS = "0,750,3000"
REFS = ("demo@step0", "demo@step750", "demo@step3000")
N_PROMPTS = 60


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """A cache with the first prompts of the agreement set on three checkpoints, extracted by
    one `extract --checkpoints` job whose progress is recorded."""
    from backend.commands import _common

    path = tmp_path_factory.mktemp("training") / "t.duckdb"
    with Store(path) as s:
        s.save_prompt_set("agreement", load_demo_set("agreement").head(N_PROMPTS))
    seen = []
    bar = _common.progress_bar
    _common.progress_bar = lambda p, stream=None: seen.append((p.tokens_done, p.tokens_total))
    try:
        argv = ["extract", "--db", str(path), "--model", "demo", "--set", "agreement"]
        assert main([*argv, "--checkpoints", STEPS]) == 0
    finally:
        _common.progress_bar = bar
    return path, seen


@pytest.fixture(scope="module")
def result(db):
    with Store(db[0], read_only=True) as s:
        return training.compute(s, training.Request(set_name="agreement", checkpoints=REFS))


def test_one_job_one_progress_over_every_checkpoint(db):
    _, seen = db
    totals = {t for _, t in seen if t}
    assert len(totals) == 1  # one bar: the total covers every checkpoint from the start
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == totals.pop()


def test_each_checkpoint_is_its_own_model_of_one_family(db):
    with Store(db[0], read_only=True) as s:
        rows = [s.find_model(r) for r in REFS]
        assert len({r["model_id"] for r in rows}) == 3
        assert training.family_refs(s, "demo") == list(REFS)
        assert training.checkpoint_refs("demo", "all", s) == [r for _, r in models.checkpoints("demo")]  # fmt: skip


def test_numbers_equal_the_per_model_views(db, result):
    with Store(db[0], read_only=True) as s:
        final = s.find_model(REFS[-1])["model_id"]
        for i, ref in enumerate(REFS):
            mid = s.find_model(ref)["model_id"]
            p = probes.compute(s, probes.Request(model_id=mid, set_name="agreement")).probe
            np.testing.assert_array_equal(result.probe_accuracy[i], p.accuracy)
            np.testing.assert_array_equal(result.probe_control[i], p.control)
            kw = {"kind": "model-cka", "model_id": mid, "set_name": "agreement"}
            m = similarity.compute(s, similarity.Request(**kw, other_model_id=final)).matrix
            np.testing.assert_allclose(result.cka_final[i], np.diag(m.values), rtol=1e-6)
            st = stats.compute(s, stats.Request(model_id=mid, set_name="agreement")).stats
            np.testing.assert_array_equal(result.stat("effective_rank")[i], st.effective_rank)
            np.testing.assert_array_equal(result.stat("massive_ratio")[i], st.massive_ratio)
            if i:
                prev = s.find_model(REFS[i - 1])["model_id"]
                m = similarity.compute(s, similarity.Request(**kw, other_model_id=prev)).matrix
                np.testing.assert_allclose(result.cka_previous[i], np.diag(m.values), rtol=1e-6)
    assert np.isnan(result.cka_previous[0]).all()
    np.testing.assert_allclose(result.cka_final[-1], 1.0, rtol=1e-5)


def test_behaviour_matches_the_evidence_script(result):
    """Answer accuracy and held-out loss against backend.demo.evidence's own loops (one prompt
    at a time, no padding)."""
    import torch

    from backend.demo import evidence

    agr = load_demo_set("agreement").head(N_PROMPTS)
    texts, what = training.heldout_texts("demo", agr)
    assert what.startswith("200 held-out sentences")
    for i in (0, 2):
        lm = models.load_model(REFS[i])
        want = evidence.agreement_accuracy(
            lm, agr["text"].tolist(), agr["label"].tolist(), agr["group"].fillna("").tolist()
        )["all"]
        assert result.behaviour[i]["answer_accuracy"] == pytest.approx(want, abs=1e-12)
        nll = n = 0
        with torch.inference_mode():
            for t in texts:
                ids = torch.tensor([lm.tokenizer(t)["input_ids"] + [lm.tokenizer.eos_token_id]])
                logp = torch.log_softmax(lm.model(input_ids=ids).logits[0, :-1].float(), -1)
                nll -= logp[torch.arange(ids.shape[1] - 1), ids[0, 1:]].double().sum().item()
                n += ids.shape[1] - 1
        assert result.behaviour[i]["heldout_loss"] == pytest.approx(nll / n, rel=1e-5)
    # untrained: chance and about ln(vocab); trained: right and far lower loss
    assert abs(result.behaviour[0]["answer_accuracy"] - 0.5) < 0.1
    assert result.behaviour[2]["answer_accuracy"] > 0.99
    assert result.behaviour[2]["heldout_loss"] < result.behaviour[0]["heldout_loss"] - 3


def test_the_cli_prints_the_view_as_strict_json(db, capsys):
    argv = ["training", "--db", str(db[0]), "--model", "demo", "--set", "agreement"]
    assert main([*argv, "--checkpoints", STEPS, "--json"]) == 0
    d = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    assert d["checkpoints"] == list(REFS) and d["steps"] == [0, 750, 3000]
    assert d["layers"] == [0, 1, 2, 3, 4]
    for key in ("probe_accuracy", "probe_control", "cka_to_final", "cka_to_previous"):
        assert np.shape(d[key]) == (3, 5), key
    for key in ("massive_ratio", "effective_rank", "anisotropy"):
        assert np.shape(d["stats"][key]) == (3, 5), key
    assert len(d["behaviour"]["answer_accuracy"]) == 3 and d["behaviour"]["missing"] == []
    assert d["cka_to_previous"][0] == [None] * 5  # NaN -> null, never bare NaN
    assert set(d["onsets"]) >= {"decodable", "probe", "behaviour", "cka"}
    assert main([*argv, "--checkpoints", STEPS]) == 0
    assert "risen from step" in capsys.readouterr().out


def test_the_cli_reads_the_cache_without_torch(db):
    code = (
        "import sys, json; from backend.cli import main; "
        f"rc = main(['training', '--db', {str(db[0])!r}, '--model', 'demo', '--set', "
        f"'agreement', '--checkpoints', {STEPS!r}, '--json']); "
        "print('@@' + json.dumps([rc, [m for m in ('torch', 'transformers') if m in sys.modules]]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )  # fmt: skip
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    assert line, out.stderr[-2000:]
    assert json.loads(line[-1][2:]) == [0, []]


def test_missing_checkpoints_are_listed_never_computed(db):
    with Store(db[0], read_only=True) as s:
        req = training.Request(
            set_name="agreement", checkpoints=("demo@step0", "demo@step200", "demo@step3000")
        )
        assert training.coverage(s, req)[1] == ["demo@step200"]
        res = training.compute(s, req)
        assert res.missing == ("demo@step200",) and res.steps == (0, 3000)
        with pytest.raises(LayerScopeError, match="Only 1 of 2 checkpoints"):
            training.compute(
                s,
                training.Request(set_name="agreement", checkpoints=("demo@step0", "demo@step200")),
            )


def test_a_bad_checkpoint_list_is_one_clear_message(db, capsys):
    argv = ["extract", "--db", str(db[0]), "--set", "agreement", "--checkpoints"]
    assert main([*argv, "0,123", "--model", "demo"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint step123; its checkpoints are step0, step200" in err
    assert err.count("\n") == 1
    assert main([*argv, "all", "--model", "demo@step0"]) == 2
    assert "without a revision" in capsys.readouterr().err


def test_trajectory_runs_over_checkpoints_at_one_layer(result):
    proj = result.trajectory
    assert proj.coords.shape == (3, N_PROMPTS, 2) and proj.layers == (0, 750, 3000)
    assert result.trajectory_layer == result.probes[-1].best_layer()
    assert len(result.trajectory_meta) == N_PROMPTS


def test_figures_draw_steps_on_x(result):
    from backend.figures import training as F

    for fig in (F.probe_figure(result), F.cka_figure(result), F.stats_figure(result)):
        assert list(fig.data[0].x) == ["0", "750", "3000"]
    b = F.behaviour_figure(result)
    assert {t.name for t in b.data} >= {"answer accuracy (behaviour)", "held-out loss (nats/token)"}
    t = F.trajectory_over_training(result)
    assert len(t.frames) == 3 and t.layout.sliders[0].currentvalue.prefix == "step "
