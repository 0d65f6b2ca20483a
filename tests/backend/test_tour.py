"""Each Tour story's "Notice" is true on the numbers its screen computes (bundled models)."""

import numpy as np
import pytest

from backend import models
from backend.tour import LENS_RUN, STORIES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model"),
]
STORY = {s.key: s for s in STORIES}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from backend.cli import main
    from backend.store import Store

    db = tmp_path_factory.mktemp("tour") / "t.duckdb"
    needs = {pair for s in STORIES for pair in s.needs}
    for model, set_name in sorted(needs):
        assert (
            main(["extract", "--db", str(db), "--model", model, "--set", set_name, "--json"]) == 0
        )
    with Store(db) as s:
        yield s


def mid(store, ref):
    return store.find_model(ref)["model_id"]


def test_number_separates_with_depth(store):
    from backend.views import trajectories as TV

    p = STORY["number"].params
    r = TV.compute(
        store,
        TV.Request(
            model_id=mid(store, "demo"),
            set_name=p["set"],
            layers=tuple(range(5)),
            standardize=False,
        ),
    )
    sil = r.silhouette
    assert abs(sil[0]) < 0.1 and sil[-1] > 0.5 and np.all(np.diff(sil) > -0.02)


def test_probe_reaches_one_above_both_controls(store):
    from backend.views import probes as P

    req = P.Request(
        model_id=mid(store, "demo"),
        set_name="agreement",
        baseline_model_id=mid(store, "demo-untrained"),
        baseline_name="demo-untrained",
    )
    d = P.compute(store, req).to_dict()
    assert d["accuracy"][2:] == [1.0, 1.0, 1.0]
    assert max(abs(c - 0.5) for c in d["control"]) < 0.07
    assert 0.55 < max(d["baseline"]["accuracy"]) < 0.75  # "about 0.65"


def test_twins_keep_a_ridge_the_untrained_model_loses(store):
    from backend.views import similarity as V

    p = STORY["twins"].params
    seed = V.compute(
        store,
        V.Request(
            kind="model-cka",
            model_id=mid(store, "demo"),
            set_name=p["set"],
            other_model_id=mid(store, p["other"]),
        ),
    ).matrix.values
    raw = V.compute(
        store,
        V.Request(
            kind="model-cka",
            model_id=mid(store, "demo"),
            set_name=p["set"],
            other_model_id=mid(store, "demo-untrained"),
        ),
    ).matrix.values
    diag, untrained = np.diag(seed), np.diag(raw)
    assert diag.min() > 0.65 and diag.max() < 0.95
    assert untrained[1:].max() < 0.5 < diag.min()


def test_lens_answer_commits_at_a_middle_layer(store):
    from backend.views import lens as L

    lm = models.get_model("demo", "auto")
    r = L.compute_run(store, lm, LENS_RUN)
    assert store.get_run(LENS_RUN)["text"] == "the friends near the robots often"
    assert r.answer.strip() == "fall" and int(r.lens.commitment[-1]) == 2


def test_errors_are_mostly_contrasts(store):
    from backend.views import probes as P

    res = P.compute(store, P.Request(model_id=mid(store, "demo"), set_name="sentiment"))
    best = res.probe.best_layer()
    acc = dict(zip(*res.group_accuracy(best)[["group", "accuracy"]].to_numpy().T))
    assert acc["plain"] > 0.9 and acc["negated"] > 0.9 and acc["contrast"] < 0.65
    wrong = res.misclassified(best)
    assert (wrong["group"] == "contrast").mean() > 0.7


def test_grammar_is_represented_before_it_is_used(store):
    """The training story: decodable at 600, probe >= 0.9 at 700 while the behaviour is ~53%,
    80% at 750 and 100% at 800; last layer max |activation| 0.2 -> over 200, effective rank
    about 60 -> about 12."""
    from backend.demo.train import CHECKPOINT_STEPS
    from backend.jobs.base import JobSpec
    from backend.jobs.worker import Worker
    from backend.tour import CHECKPOINT_STEPS as TOUR_STEPS
    from backend.views import training as T

    assert TOUR_STEPS == CHECKPOINT_STEPS
    refs = [m for m, _ in STORY["training"].needs]
    spec = JobSpec("demo", "agreement", kind="checkpoints", options={"checkpoints": refs})
    assert Worker(store).run(spec).status == "done"  # runs are cached: behaviour only
    d = T.compute(store, T.Request(set_name="agreement", checkpoints=tuple(refs))).to_dict()
    step = dict(zip(d["steps"], range(len(d["steps"]))))
    acc = d["behaviour"]["answer_accuracy"]
    assert d["onsets"]["decodable"] == 600 and d["onsets"]["probe"] == 700
    assert d["onsets"]["behaviour"] == 800
    assert abs(acc[step[700]] - 0.53) < 0.01 and abs(acc[step[750]] - 0.80) < 0.01
    assert acc[step[800]] > 0.995
    mx, er = d["stats"]["max_abs"], d["stats"]["effective_rank"]
    assert round(mx[0][-1], 1) == 0.2 and mx[-1][-1] > 200
    assert 55 < er[0][-1] < 65 and 11 < er[-1][-1] < 13


def test_cause_moves_from_the_subject_to_the_last_position(store):
    from backend.views import patching as V

    p = STORY["cause"].params
    lm = models.get_model("demo", "auto")  # the set's clean states come from the store (fp16)

    def rec(component):
        req = V.Request(model="demo", clean=p["clean"], corrupted=p["corrupted"], component=component,
                        set_name=p["pairs"], pairs=True)  # fmt: skip
        r = V.compute(store, req, lm=lm, use_cache=False)
        return r, {layer: r.recovery[i] for i, layer in enumerate(r.layers)}

    r, by = rec("resid")
    assert r.n_pairs == 25 and r.tokens[2] == "cat"
    assert round(by[0][2], 2) == 1.00 and round(by[1][2], 2) == 0.99  # the subject, early
    assert round(by[2][2], 2) == 0.05 and round(by[2][-1], 2) == 0.96  # the last position, later
    assert min(by[3][-1], by[4][-1]) > 0.995
    _, attn = rec("attn")
    assert round(attn[2][-1], 2) == 0.95
    _, mlp = rec("mlp")
    assert (
        max(v[-1] for v in mlp.values()) < 0.16
        and round(max(v[-1] for v in mlp.values()), 2) == 0.15
    )


def test_who_wrote_the_answer_heads_reading_the_subject_lead():
    from backend.views import attention as A
    from backend.views import attribution as V

    p = STORY["who"].params
    req = V.Request(model="demo", prompt=p["prompt"], answer=p["answer"], against=p["against"])
    r = V.compute(None, req)
    assert round(r.logit_diff, 2) == 3.33 and abs(r.total - r.logit_diff) < 1e-3
    top = sorted(((v, la, h) for la, row in zip(r.layers, r.heads) for h, v in enumerate(row)),
                 reverse=True)[:2]  # fmt: skip
    assert [(la, h) for _, la, h in top] == [(2, 1), (2, 0)]
    assert [round(v, 2) for v, _, _ in top] == [0.34, 0.27]
    att = A.compute(None, A.Request(model="demo", prompt=p["prompt"])).attention
    assert r.tokens[2] == "teacher" and att[1, 0, -1, 2] > 0.99 and att[1, 1, -1, 2] > 0.99
    route = {(tuple(e.source), tuple(e.target)) for e in r.graph.edges if e.route}
    assert ((1, 2), (2, 6)) in route  # teacher -> always, through layer 2's attention
    assert r.mlp.argmax() == 3 and round(r.mlp[3], 2) == 1.05
    assert r.mlp[3] > max(abs(r.attn).max(), abs(r.mlp[:3]).max(), abs(r.heads).max())


def test_features_finds_subject_number_without_labels(store):
    from backend.demo.words import NOUNS, VERBS
    from backend.views import dictionaries
    from backend.views import features as FV

    p = STORY["features"].params
    m = mid(store, "demo")
    layer, latents, k = int(p["layer"]), int(p["latents"]), int(p["k"])
    dictionaries.train(store, m, p["set"], layer, latents, k)
    lm = models.get_model("demo")
    req = FV.Request(model_id=m, set_name=p["set"], layer=layer, latents=latents, k=k)
    r = FV.compute(store, req, lm=lm)
    best = r.table.iloc[0]
    assert best["auroc"] >= 0.995 and best["auroc_label"] == "singular"  # "AUROC 1.00"
    ctx = r.detail.contexts
    assert (ctx["label"] == "singular").all()  # every top context has a singular subject
    assert set(ctx["token"]) & set(NOUNS.values())  # ... some end on a plural noun
    assert {t for t, _ in r.detail.logit_top[:5]} <= set(VERBS)  # singular verbs go up
