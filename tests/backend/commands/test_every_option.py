"""Every CLI option of every view command reaches the view's Request (or is listed as handled
elsewhere, with the reason): a flag can never again be parsed and silently dropped, as
``similarity --center`` was.

Each command runs with its defaults and once per option with a non-default value; the view's
``compute`` is replaced by a function that captures the Request. The option's Request field
must differ between the two. An option that is neither mapped here nor listed as handled
elsewhere fails ``test_every_option_is_accounted_for``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types

import pandas as pd
import pytest

from backend.cli import build_parser


class Captured(Exception):
    def __init__(self, request):
        self.request = request


class FakeStore:
    """Just enough store for the commands' request building (no runs are read)."""

    def get_model(self, model_id):
        return {
            "model_id": model_id,
            "n_layers": 4,
            "has_lm_head": model_id != "enc-id",
            "architecture": "BertModel" if model_id == "enc-id" else "GPT2LMHeadModel",
        }

    find_model = get_model

    def get_set(self, name):
        return pd.DataFrame(
            {"idx": [0, 1], "text": ["a b", "c d"], "label": ["x", "y"], "group": [None, None]}
        )

    def save_prompt_set(self, *a, **k):
        return None


RUNS = pd.DataFrame({"run_id": ["r0", "r1"], "idx": [0, 1], "text": ["a b", "c d"]})

#: options that are not Request fields, and where they are handled
ELSEWHERE = {
    "db": "cli.main opens the store",
    "json": "cli.main prints the dict as JSON",
    "model": "resolved to model_id by ensure_runs / cli.model_for_set",
    "set_name": "the set every request names; required, so there is no non-default to try",
    "dtype": "ensure_runs / the extract job (which stored states are read)",
    "device": "ensure_runs / the extract job",
    "trust_remote_code": "ensure_runs / the extract job",
}

#: command -> {dest: (argv for a non-default value, Request field it must change)}
MAPPED = {
    "trajectories": {
        "method": (["--method", "aligned"], "method"),
        "unit": (["--unit", "token"], "unit"),
        "pool": (["--pool", "mean"], "pool"),
        "layers": (["--layers", "1:2"], "layers"),
        "dims": (["--dims", "3"], "dims"),
        "standardize": (["--no-standardize"], "standardize"),
        "max_runs": (["--max-runs", "3"], "max_runs"),
        "sample": (["--sample", "5"], "sample"),
        "seed": (["--seed", "7"], "seed"),
    },
    "similarity": {
        "kind": (["--kind", "prompt"], "kind"),
        "layer": (["--layer", "2"], "layer"),
        "other_model": (["--other-model", "other"], "other_model_id"),
        "units": (["--units", "mean"], "units"),
        "debiased": (["--debiased"], "debiased"),
        "order": (["--order", "label"], "order"),
        "prompt": (["--prompt", "1"], "run_id"),
        "center": (["--center"], "center"),
        "max_units": (["--max-units", "10"], "max_units"),
    },
    "probes": {
        "unit": (["--unit", "token"], "unit"),
        "pool": (["--pool", "mean"], "pool"),
        "folds": (["--folds", "3"], "folds"),
        "method": (["--method", "ridge"], "method"),
        "layers": (["--layers", "1:2"], "layers"),
        "baseline": (["--baseline", "other"], "baseline_model_id"),
    },
    "lens": {
        "positions": (["--positions", "all"], "positions"),
        "lens": (["--lens", "tuned"], "kind"),
    },
    "stats": {
        "max_runs": (["--max-runs", "3"], "max_runs"),
    },
    "generation": {
        "samples": (["--samples", "3"], "samples"),
        "max_new_tokens": (["--max-new-tokens", "4"], "max_new_tokens"),
        "temperature": (["--temperature", "0.5"], "temperature"),
        "top_p": (["--top-p", "0.9"], "top_p"),
        "seed": (["--seed", "3"], "seed"),
        "answer_regex": (["--answer-regex", "(a)"], "regex"),
        "layer": (["--layer", "1"], "layer"),
        "step": (["--step", "2"], "step"),
        "versus_label": (["--versus-label"], "versus_label"),
        "centre": (["--centre", "set"], "centre"),
        "tree": (["--tree"], "tree"),
    },
    "patching": {
        "answer": (["--answer", "x"], "answer"),
        "against": (["--against", "y"], "against"),
        "layers": (["--layers", "1,2"], "layers"),
        "positions": (["--positions", "0"], "positions"),
        "top": (["--top", "3"], "top_k"),
        "metric": (["--metric", "prob"], "metric"),
        "component": (["--component", "mlp"], "component"),
        "set_name": (["--set", "s"], "set_name"),
        "pairs": (["--set", "s", "--pairs"], "pairs"),
        "n_boot": (["--n-boot", "10"], "n_boot"),
        "seed": (["--seed", "3"], "seed"),
        "method": (["--method", "atp"], "method"),
        "verify": (["--method", "atp", "--verify", "5"], "verify"),
        "feature": (["--component", "feature", "--feature", "3", "--layers", "1"], "feature"),
    },
    "attention": {},
    "attribution": {
        "answer": (["--answer", "x"], "answer"),
        "against": (["--against", "y"], "against"),
        "position": (["--position", "2"], "position"),
        "threshold": (["--threshold", "0.2"], "threshold"),
    },
    "steering": {
        "prompt": (["--prompt", "x y"], "prompts"),
        "layer": (["--layer", "2"], "layer"),
        "direction": (["--direction", "random"], "direction"),
        "labels": (["--labels", "x,y"], "labels"),
        "alphas": (["--alphas", "1,2"], "alphas"),
        "max_new_tokens": (["--max-new-tokens", "3"], "max_new_tokens"),
        "temperature": (["--temperature", "0.7"], "temperature"),
        "seed": (["--seed", "3"], "seed"),
        "start": (["--start", "2"], "start"),
        "max_prompts": (["--max-prompts", "5"], "max_prompts"),
        "answers": (["--answers", "a;b"], "answers"),
    },
    "training": {
        "checkpoints": (["--checkpoints", "0,5"], "checkpoints"),
        "pool": (["--pool", "mean"], "pool"),
        "folds": (["--folds", "3"], "folds"),
        "method": (["--method", "ridge"], "method"),
        "cka_units": (["--cka-units", "last"], "cka_units"),
        "layer": (["--layer", "2"], "layer"),
        "max_runs": (["--max-runs", "3"], "max_runs"),
    },
    "prompt": {
        "run_id": (["--run", "other"], "run_id"),
    },
    "features": {
        "layer": (["--layer", "2"], "layer"),
        "latents": (["--latents", "64"], "latents"),
        "k": (["--k", "4"], "k"),
        "seed": (["--seed", "3"], "seed"),
        "imported": (["--imported"], "imported"),
        "feature": (["--feature", "5"], "feature"),
        "sort": (["--sort", "density"], "sort"),
        "top": (["--top", "3"], "top"),
        "probe_k": (["--probe-k", "4"], "probe_k"),
    },
}

#: per command, options that are not Request fields (besides ELSEWHERE), and why
COMMAND_ELSEWHERE = {
    "trajectories": {},
    "similarity": {},
    "probes": {
        "label": "only 'label' is accepted (checked in run: anything else is an error)",
        "weights": "writes the fitted weights after compute (save_weights)",
    },
    "lens": {
        "prompt": "the one-prompt path reads a live capture, not a Request (lens_of)",
        "top": "the one-prompt path's top-k (lens_of)",
    },
    "stats": {},
    "generation": {
        "prompts": "loaded into the set before sampling (store.save_prompt_set)",
        "replace": "lets the prompt file replace an existing set (_common.save_file_set)",
        "text_column": "prompt file parsing (prompts.load_prompts)",
        "label_column": "prompt file parsing (prompts.load_prompts)",
    },
    "patching": {
        "clean": "required: always given (BASE), so there is no non-default to try",
        "corrupted": "required: always given (BASE)",
        "cell": "after compute: views.patching.cell_distribution of that one cell",
        "no_cache": "passed to compute as use_cache (whether to read the stored result)",
    },
    "attention": {"prompt": "required: always given (BASE)"},
    "attribution": {"prompt": "required: always given (BASE)"},
    "steering": {
        "no_cache": "passed to compute as use_cache (whether to read the stored result)",
        "store_runs": "after compute: views.steering_runs.store_runs with the same Request",
    },
    "training": {},
    "prompt": {},
    "features": {
        "action": "train / export / import go to backend/views/dictionaries (tests: test_features)",
        "logit_effects": "loads the model, passed to compute as lm",
        "out": "export: the output folder",
        "src": "import: the SAELens folder",
        "splice": "loads the model; dictionaries.splice stores the spliced loss with the dictionary",
    },
}

BASE = {
    "trajectories": ["--set", "s", "--model", "m"],
    "similarity": ["--set", "s", "--model", "m"],
    "probes": ["--set", "s", "--model", "m", "--baseline", "none"],
    "lens": ["--set", "s", "--model", "m"],
    "stats": ["--set", "s", "--model", "m"],
    "generation": ["--set", "s", "--model", "m"],
    "patching": ["--model", "m", "--clean", "a b", "--corrupted", "c d"],
    "attention": ["--model", "m", "--prompt", "a b"],
    "attribution": ["--model", "m", "--prompt", "a b"],
    "steering": ["--model", "m", "--set", "s", "--layer", "1"],
    "training": ["--set", "s", "--model", "m"],
    "prompt": ["--run", "r"],
    "features": ["--set", "s", "--model", "m", "--layer", "1"],
}


def _subparsers():
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def _dests(command: str) -> set[str]:
    p = _subparsers()[command]
    return {a.dest for a in p._actions if a.dest != "help"}


def _patch(monkeypatch, command: str):
    """Replace what a command computes with a capture of its request."""
    mod = importlib.import_module(f"backend.commands.{command}")
    if hasattr(mod, "ensure_runs"):
        monkeypatch.setattr(
            mod, "ensure_runs", lambda store, args, quiet=False: (f"{args.model}-id", RUNS)
        )

    def capture(*args, **kwargs):
        raise Captured(args[-1])

    if command in ("trajectories",):
        monkeypatch.setattr(mod, "compute", capture)
    elif command == "similarity":
        monkeypatch.setattr(mod.similarity_view, "compute", capture)
    elif command == "probes":
        monkeypatch.setattr(mod.probes, "compute", capture)
    elif command == "stats":
        monkeypatch.setattr(mod.stats, "compute", capture)
    elif command == "prompt":
        monkeypatch.setattr(mod.prompt, "compute", capture)
    elif command == "lens":
        monkeypatch.setattr(mod.models, "get_model", lambda *a, **k: object())
        monkeypatch.setattr(mod.lens, "check_lens", lambda lm: None)
        monkeypatch.setattr(mod.lens, "ensure_tuned", lambda *a: None)
        monkeypatch.setattr(mod.lens, "compute_set", capture)
    elif command == "generation":
        _patch_generation(monkeypatch, mod)
    elif command == "patching":
        monkeypatch.setattr(mod.patching, "compute", capture)
    elif command == "attention":
        monkeypatch.setattr(mod.attention, "compute", capture)
    elif command == "attribution":
        monkeypatch.setattr(mod.attribution, "compute", capture)
    elif command == "steering":
        monkeypatch.setattr(mod.steering, "compute", capture)
    elif command == "features":
        monkeypatch.setattr(mod.FV, "compute", lambda store, req, lm=None: capture(req))
    elif command == "training":
        monkeypatch.setattr(mod.catalog, "ensure_set", lambda store, name: None)
        monkeypatch.setattr(
            mod.training, "checkpoint_refs", lambda m, w, store=None: [f"{m}@{w}", f"{m}@end"]
        )
        monkeypatch.setattr(mod.training, "coverage", lambda store, req: ({}, []))
        monkeypatch.setattr(mod.training, "compute", capture)


def _patch_generation(monkeypatch, mod):
    """generation's sampling options reach both the sampling job's spec and the view's
    Request (whose ``sampling`` must be the job's): the Request is captured, flattened."""
    seen: dict = {}
    monkeypatch.setattr(mod.models, "resolve", lambda ref: ref)
    monkeypatch.setattr(mod.models, "read_config", lambda ref: {"num_hidden_layers": 4})
    monkeypatch.setattr(mod.models, "pick_dtype", lambda *a, **k: "torch.float32")
    monkeypatch.setattr(mod.catalog, "ensure_set", lambda store, name: None)

    def run_job(store, spec, quiet=False):
        seen.update(spec.options)
        res = {"model_id": "m-id", "runs": 0, "cached_runs": 0, "tokens": 0}
        return types.SimpleNamespace(result=res, seconds=0.0)

    def compute(store, req, lm=None):
        s = req.sampling
        assert seen == s.key() | {"samples": s.samples}, "the job sampled other settings"
        flat = {k: v for k, v in dataclasses.asdict(req).items() if k != "sampling"}
        raise Captured(types.SimpleNamespace(**flat, **dataclasses.asdict(s)))

    monkeypatch.setattr(mod, "run_job", run_job)
    monkeypatch.setattr(mod.generation_views, "compute", compute)


def _request(command: str, argv: list[str]):
    parser, mods = build_parser()
    args = parser.parse_args([command, *argv])
    args.db, args.json = None, False
    with pytest.raises(Captured) as got:
        mods[command].run(args, FakeStore())
    req = got.value.request
    return dataclasses.asdict(req) if dataclasses.is_dataclass(req) else vars(req)


@pytest.mark.parametrize("command", sorted(MAPPED))
def test_every_option_is_accounted_for(command):
    known = set(MAPPED[command]) | set(ELSEWHERE) | set(COMMAND_ELSEWHERE[command])
    new = _dests(command) - known
    assert not new, (
        f"`{command}` has options {sorted(new)} that neither reach its Request in this test "
        "nor are listed as handled elsewhere"
    )
    assert not set(MAPPED[command]) - _dests(command), "stale entries in MAPPED"


def test_every_view_command_is_covered():
    view_commands = {
        name
        for name in _subparsers()
        if name in MAPPED or importlib.util.find_spec(f"backend.views.{name}") is not None
    }
    assert view_commands <= set(MAPPED)


@pytest.mark.parametrize(
    "command, dest", [(c, d) for c in sorted(MAPPED) for d in sorted(MAPPED[c])]
)
def test_option_reaches_the_request(command, dest, monkeypatch):
    _patch(monkeypatch, command)
    argv, field = MAPPED[command][dest]
    base = _request(command, BASE[command])
    changed = _request(command, [*BASE[command], *argv])
    assert field in base, f"{field} is not a field of {command}'s request"
    assert changed[field] != base[field], (
        f"`{command} {' '.join(argv)}` did not change the request's {field}"
    )


def _captured(command: str, argv: list[str]):
    parser, mods = build_parser()
    args = parser.parse_args([command, *argv])
    args.db, args.json = None, False
    with pytest.raises(Captured) as got:
        mods[command].run(args, FakeStore())
    return got.value.request


def _defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@pytest.mark.parametrize("command", sorted(MAPPED))
def test_the_cli_defaults_are_the_requests_defaults(command, monkeypatch):
    """A flag left out gives the Request's own default: the page (which builds the Request
    with the fields it shows) and the CLI can no longer disagree on a default, as
    trajectories' ``standardize`` did (CLI True, Request False)."""
    from backend.records import Sampling
    from backend.views import VIEWS

    _patch(monkeypatch, command)
    req = _captured(command, BASE[command])
    if dataclasses.is_dataclass(req):
        got, defaults = dataclasses.asdict(req), _defaults(type(req))
    else:  # generation: its Request flattened with its Sampling
        got = vars(req)
        defaults = _defaults(VIEWS[command].Request) | _defaults(Sampling)
    fields = {field for _, field in MAPPED[command].values()}
    drift = {
        f: (got[f], defaults[f])
        for f in sorted(fields)
        if f in defaults and f in got and got[f] != defaults[f]
    }
    assert not drift, f"`{command}` defaults (CLI, Request) differ: {drift}"
