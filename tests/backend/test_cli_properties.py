"""Property-based (Hypothesis): every CLI verb, arguments generated from its own argparse
parser (numbers incl. NaN / inf / negative / huge, odd strings, bad paths), against a small
prepared cache (the demo model, six prompts). Each run exits 0, or 2 with exactly one
``error:`` line; never a traceback, an "internal error" or a logged stack.

Deterministic (``derandomize``) and with a fixed budget of examples per verb; options whose
valid values start minutes of work (the Ray engine, UMAP's compilation, a tuned lens, every
checkpoint of a model: `training` gets invalid sets only) are drawn from their cheap or invalid
values only."""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import shutil

import pytest

hyp = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from backend import models  # noqa: E402
from backend.commands import COMMANDS  # noqa: E402

pytestmark = pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model")

#: examples per verb: verbs that run the model get fewer
EXAMPLES = {"extract": 6, "generation": 5, "patching": 5, "steering": 5, "training": 4,
            "attention": 4, "lens": 5, "probes": 6}  # fmt: skip
DEFAULT_EXAMPLES = 8
COUNTS: dict[str, int] = {}  #: generated cases per verb (printed at the end of the module)

SLOW = {"umap", "aligned-umap", "ray", "tuned"}  #: choices that start minutes of work
COSTLY = {"max_new_tokens", "max_prompts", "samples", "n_boot"}  #: clean value 1: fast
INTS = ["-1", "0", "1", "2", "3", "nan", "inf", "1e3", "99999999999", "-99999999999", "x", ""]
FLOATS = ["nan", "inf", "-inf", "-1", "0", "0.5", "1", "1e308", "-1e308", "x", ""]
ODD = ["", " ", "x", "-1", "nan", "1e308", "0,1", "a,b,c", "../../etc/passwd", "=1+1",
       "http://evil.example/a", "ünïcödé", "x" * 300, "[b](http://e)", "step0"]  # fmt: skip
PROMPTS = [("the cat runs", "sing"), ("the dog sits", "sing"), ("the cats run", "plur"),
           ("the dogs sit", "plur"), ("the cat near the dogs runs", "sing"),
           ("the dogs near the cat sit", "plur")]  # fmt: skip


class _Stacks(logging.Handler):
    """Counts log records that carry a traceback (a stack printed to the user)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        if record.exc_info and record.levelno >= logging.WARNING:
            self.records.append(record)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from backend.cli import main

    root = tmp_path_factory.mktemp("fuzz")
    (root / "p.csv").write_text(
        "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in PROMPTS), encoding="utf-8"
    )
    db = root / "prepared.duckdb"
    argv = ["extract", "--db", str(db), "--model", "demo", "--prompts", str(root / "p.csv")]
    assert main([*argv, "--set", "p", "--label-column", "label", "--json"]) == 0
    # the probes' default baseline (the untrained twin) is cached too: probes answer at once
    assert main(["extract", "--db", str(db), "--model", "demo-untrained", "--set", "p"]) == 0
    (root / "folder").mkdir()
    (root / "empty.txt").write_text("")
    (root / "nulls.jsonl").write_text('{"text": null}\n{"text": 3}\n')
    (root / "two.txt").write_text("the cat runs\nthe dogs sit\n")
    return root


def _values(root, verb: str, action) -> tuple[list[str], list[str]] | None:
    """(clean values, all values) for one option; None: a flag without value. A clean
    example draws only clean values (it goes past parsing, into the view); the others mix in
    NaN, huge and negative numbers, odd strings and bad paths."""
    dest, name = action.dest, getattr(action.type, "__name__", "")
    if action.nargs == 0:
        return None
    if verb == "training" and dest == "set_name":  # measuring 5 checkpoints takes a minute
        return ["missing"], ["missing", "../x", "", "x" * 300]
    r = str(root)
    special = {  # dest: (how many of the first values are clean, values)
        "model": (1, ["demo", "nope/not-a-model", f"{r}/folder", ""]),
        "other_model": (1, ["demo", "nope/not-a-model"]),
        "baseline": (2, ["demo", "(none)", "nope/not-a-model"]),
        "set_name": (1, ["p", "q-new", "missing", "../x", ""]),
        "prompts": (
            2,
            [
                f"{r}/{f}"
                for f in ("two.txt", "p.csv", "folder", "empty.txt", "nulls.jsonl", "absent.txt")
            ],
        ),
        "out": (1, [f"{r}/o.parquet", f"{r}/folder", "/proc/x.parquet", f"{r}/absent/o.parquet"]),
        "weights": (1, [f"{r}/w.npy", f"{r}/folder", "/proc/w.npy"]),
        "direction": (2, ["means", "random", "probe", f"{r}/absent.npy", "/etc/passwd.npy"]),
        "device": (1, ["cpu", "cuda", "meta", "x"]),
        "engine": (1, ["local", "bogus"]),  # the Ray engine starts a cluster: not here
        "method": (4, ["pca", "aligned", "logistic", "ridge", "bogus"]),  # no UMAP compiling
        "lens": (1, ["logit", "bogus"]),  # a tuned lens trains for seconds
        "alphas": (2, ["0,1", "0", "1e308", "nan", "-1e308,1e308", "", "a,b"]),
        "answer_regex": (1, [r"(\w+)", "(unclosed", r"(x+x+)+y", ""]),
        "clean": (1, ["the cat runs", "", "x" * 300]),
        "corrupted": (1, ["the cats run", "", "the"]),
        "prompt": (1, ["the cat runs", "", " ", "=1+1"]) if verb != "similarity" else (0, INTS),
        "labels": (1, ["sing,plur", "a", "x,y,z"]),
        "layers": (1, ["0,1", "-1", "a", "99"]),
    }
    if dest in special:
        n, values = special[dest]
        return values[:n], values
    if action.choices is not None:
        return [str(c) for c in action.choices if c not in SLOW], [
            *map(str, action.choices),
            "bogus",
        ]
    if name == "integer" or action.type is int:
        return (["1"] if dest in COSTLY else ["2", "3"]), INTS
    if name == "number" or action.type is float:
        return ["0.5", "1"], FLOATS
    return [], ODD


def argv_strategy(root, verb: str, parser: argparse.ArgumentParser, db: str):
    def build(clean: bool):
        parts = []
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction) or a.dest in ("db", "json"):
                continue
            if not a.option_strings:  # an optional positional (features' action): left out
                continue
            flag, values = a.option_strings[0], _values(root, verb, a)
            if values is None:
                one = st.just([flag])
            else:
                pool = values[0] if clean else values[1]
                if not pool:  # no clean value for a free-text option: leave it out
                    parts.append(st.just([]))
                    continue
                one = st.sampled_from(pool).map(lambda v, f=flag: [f"{f}={v}"])
            always = a.required or (clean and a.dest in ("model", "set_name", "alphas", *COSTLY))
            parts.append(one if always else st.one_of(st.just([]), one))
        return st.tuples(st.booleans(), *parts).map(
            lambda t: (
                [verb, "--db", db, *(["--json"] if t[0] else [])] + [x for p in t[1:] for x in p]
            )
        )

    return st.booleans().flatmap(build)


def _parsers():
    from backend.cli import build_parser

    parser, _ = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


@pytest.mark.parametrize("verb", list(COMMANDS))
def test_every_verb_exits_cleanly_on_generated_arguments(verb, prepared, monkeypatch):
    from backend.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id never reaches the network
    monkeypatch.delenv("LAYERSCOPE_DB", raising=False)
    monkeypatch.chdir(prepared)  # relative paths (shards/, 'x') stay in the temp folder
    work = prepared / f"work-{verb}.duckdb"
    stacks = _Stacks()
    logging.getLogger().addHandler(stacks)
    COUNTS[verb] = 0

    @settings(
        max_examples=EXAMPLES.get(verb, DEFAULT_EXAMPLES),
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(argv_strategy(prepared, verb, _parsers()[verb], str(work)))
    def check(argv):
        COUNTS[verb] += 1
        for suffix in ("", ".wal"):  # a fresh copy each time: `delete` and `extract` write
            (prepared / f"work-{verb}.duckdb{suffix}").unlink(missing_ok=True)
        shutil.copy(prepared / "prepared.duckdb", work)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(argv))
        text = out.getvalue() + err.getvalue()
        assert rc in (0, 2), (argv, rc, text[-2000:])
        assert "Traceback" not in text and "internal error" not in text, (argv, text[-2000:])
        errors = [ln for ln in err.getvalue().splitlines() if ln.startswith("error:")]
        assert len(errors) == (1 if rc == 2 else 0), (argv, err.getvalue()[-2000:])
        assert not stacks.records, (argv, [r.getMessage() for r in stacks.records])

    try:
        check()
    finally:
        logging.getLogger().removeHandler(stacks)
    assert COUNTS[verb] > 0


def test_zz_report_generated_cases_per_verb(capsys):
    """Prints the count of generated cases per verb (run with -s to see it)."""
    with capsys.disabled():
        print("\ngenerated CLI cases per verb:", dict(COUNTS), "total", sum(COUNTS.values()))
