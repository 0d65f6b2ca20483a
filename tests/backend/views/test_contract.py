"""The view contract, checked for every entry of ``backend.views.VIEWS`` (in the spirit of
scikit-learn's ``parametrize_with_checks``): a frozen keyword-only ``Request``, a frozen
``Result`` whose ``to_dict()`` is strict JSON, ``to_frame()`` a DataFrame where it exists,
``compute(store, request, lm=None)``, and the CLI twin printing the same numbers.

Every view runs for real on one tiny GPT-2 saved to disk and one extracted labelled set; a
view added to ``VIEWS`` without a case here fails ``test_every_view_has_a_case``."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pandas as pd
import pytest

from backend.cli import dumps, main
from backend.records import Sampling
from backend.store import Store
from backend.views import VIEWS

PROMPTS = [
    ("the cat runs", "sg"),
    ("the dogs run", "pl"),
    ("the cat sits on the mat", "sg"),
    ("the dogs sit on the mat", "pl"),
    ("a cat is happy", "sg"),
    ("the cats are happy", "pl"),
    ("a dog was sad", "sg"),
    ("the dogs were sad", "pl"),
    ("the big cat runs", "sg"),
    ("the big cats run", "pl"),
]

#: every view the app has (the issue's list); a new one joins here and in CASES
EXPECTED = {
    "attribution",
    "features",
    "prompt",
    "library",
    "trajectories",
    "similarity",
    "probes",
    "lens",
    "stats",
    "generation",
    "patching",
    "attention",
    "steering",
    "training",
}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, tiny_model_dir):
    """A cache with one tiny GPT-2 and the set ``s`` extracted (every layer stored)."""
    tmp = tmp_path_factory.mktemp("contract")
    db = str(tmp / "c.duckdb")
    f = tmp / "p.csv"
    f.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in PROMPTS))
    model = str(tiny_model_dir("gpt2"))
    argv = ["extract", "--model", model, "--prompts", str(f), "--label-column", "label"]
    assert main([*argv, "--set", "s", "--db", db]) == 0
    with Store(db) as s:
        model_id = s.find_model(model)["model_id"]
    return {"db": db, "model": model, "model_id": model_id}


#: what a view needs computed first (as the page's button does): CLI argv per view
PREP = {"features": ["features", "train", "--layer", "1", "--latents", "16", "--k", "2"]}


def _cases(c: dict) -> dict:
    """name -> (CLI argv, build(store) -> the Request asking for the same numbers). The CLI
    runs first (some twins compute what is missing, as the page's button does)."""
    m, mid = c["model"], c["model_id"]
    on_set = ["--model", m, "--set", "s"]
    sampling = Sampling(samples=3, max_new_tokens=2, temperature=1.0, top_p=1.0, seed=0)
    clean = {"model": m, "clean": "the cat runs", "corrupted": "the cats runs"}
    pair = {**clean, "answer": "on", "against": "and"}
    steer = {"layer": 1, "labels": ("sg", "pl"), "alphas": (0.0, 4.0), "max_new_tokens": 1}
    first_run = lambda s: s.set_runs("s", mid)["run_id"].iloc[0]
    return {
        "stats": (["stats", *on_set], lambda s: {"model_id": mid, "set_name": "s"}),
        "attention": (
            ["attention", "--model", m, "--prompt", "the cat runs"],
            lambda s: {"model": m, "prompt": "the cat runs"},
        ),
        "patching": (
            [
                "patching",
                "--model",
                m,
                "--clean",
                pair["clean"],
                "--corrupted",
                pair["corrupted"],
                "--answer",
                "on",
                "--against",
                "and",
            ],
            lambda s: pair,
        ),
        "probes": (
            ["probes", *on_set, "--folds", "2", "--baseline", "none"],
            lambda s: {"model_id": mid, "set_name": "s", "folds": 2},
        ),
        "steering": (
            [
                "steering",
                *on_set,
                "--layer",
                "1",
                "--labels",
                "sg,pl",
                "--alphas=0,4",
                "--max-new-tokens",
                "1",
                "--max-prompts",
                "4",
            ],
            lambda s: {"model": m, "set_name": "s", "max_prompts": 4, **steer},
        ),
        "trajectories": (
            ["trajectories", *on_set, "--layers", "0,1,2,3"],
            lambda s: {"model_id": mid, "set_name": "s", "layers": (0, 1, 2, 3)},
        ),
        "similarity": (
            ["similarity", *on_set, "--kind", "layer-cka"],
            lambda s: {"kind": "layer-cka", "model_id": mid, "set_name": "s"},
        ),
        "generation": (
            ["generation", *on_set, "--samples", "3", "--max-new-tokens", "2"],
            lambda s: {"model_id": mid, "set_name": "s", "sampling": sampling},
        ),
        "training": (
            ["training", "--model", "demo", "--set", "s", "--checkpoints", "0,3000"],
            lambda s: {"set_name": "s", "checkpoints": ("demo@step0", "demo@step3000")},
        ),
        "prompt": (
            None,  # the run id is known once the set is extracted
            lambda s: {"run_id": first_run(s)},
        ),
        "library": (["ls"], lambda s: {}),
        "features": (
            ["features", *on_set, "--layer", "1", "--latents", "16", "--k", "2", "--feature", "0"],
            lambda s: {
                "model_id": mid,
                "set_name": "s",
                "layer": 1,
                "latents": 16,
                "k": 2,
                "feature": 0,
            },
        ),
        "lens": (
            ["lens", *on_set, "--positions", "all"],
            lambda s: {"model": m, "model_id": mid, "set_name": "s", "positions": "all"},
        ),
        "attribution": (
            [
                "attribution",
                "--model",
                m,
                "--prompt",
                "the cat runs",
                "--answer",
                "on",
                "--against",
                "and",
            ],
            lambda s: {"model": m, "prompt": "the cat runs", "answer": "on", "against": "and"},
        ),
    }


def test_every_view_is_registered_and_has_a_case():
    assert set(VIEWS) >= EXPECTED, f"missing from VIEWS: {sorted(EXPECTED - set(VIEWS))}"


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_the_view_module_has_the_contract_shape(name):
    mod = VIEWS[name]
    for part in ("Request", "Result", "compute"):
        assert hasattr(mod, part), f"views.{name} has no {part}"
    req, res = mod.Request, mod.Result
    assert dataclasses.is_dataclass(req) and req.__dataclass_params__.frozen
    assert all(f.kw_only for f in dataclasses.fields(req)), f"{name}.Request is not keyword-only"
    assert dataclasses.is_dataclass(res) and res.__dataclass_params__.frozen
    assert callable(getattr(res, "to_dict", None)), f"{name}.Result has no to_dict()"
    params = list(inspect.signature(mod.compute).parameters.values())
    assert [p.name for p in params[:3]] == ["store", "req", "lm"], f"{name}.compute{params}"
    assert params[2].default is None


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_view_computes_and_its_cli_twin_prints_the_same_numbers(name, ctx, capsys):
    cases = _cases(ctx)
    if name not in cases:
        pytest.fail(f"no contract case for the view {name!r}: add one to _cases")
    argv, build = cases[name]
    mod = VIEWS[name]
    if name in PREP:
        prep = [*PREP[name], "--model", ctx["model"], "--set", "s", "--db", ctx["db"]]
        assert main(prep) == 0, capsys.readouterr().err
    with Store(ctx["db"]) as store:
        kwargs = build(store)
    if argv is None:  # e.g. a run id: known only now
        argv = [name, "--run", kwargs["run_id"]]
    capsys.readouterr()
    assert main([*argv, "--db", ctx["db"], "--json"]) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out)
    with Store(ctx["db"]) as store:
        result = mod.compute(store, mod.Request(**kwargs))
    assert isinstance(result, mod.Result)
    data = json.loads(dumps(result.to_dict()))  # strict JSON: no NaN, no objects
    assert data, f"{name}.to_dict() is empty"
    if hasattr(result, "to_frame"):
        assert isinstance(result.to_frame(), pd.DataFrame)
    differ = [k for k, v in data.items() if k in printed and printed[k] != v]
    missing = [k for k in data if k not in printed]
    assert not differ, f"the CLI prints other values for {differ}"
    assert not missing, f"the CLI leaves out {missing}"
