"""Reading the cache never imports torch or transformers: `ls`, `export` and the views' CLI
twins on a set whose runs are stored start in about a second, not the ~3 s torch costs."""

import argparse
import json
import os
import subprocess
import sys

import pandas as pd

from backend.cli import main
from backend.commands._common import cached_runs, ensure_runs
from backend.store import Store
from tests.conftest import ROOT

HEAVY = ("torch", "transformers")

#: one process runs every read verb, then reports which heavy modules it imported
WRAPPER = """
import json, sys
from backend.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
heavy = [m for m in sys.argv[2].split(",") if m in sys.modules]
print("@@" + json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_read_verbs_never_import_torch(tmp_path, tiny_model_dir, capsys):
    db = str(tmp_path / "read.duckdb")
    f = tmp_path / "p.csv"
    rows = [("the cat runs", "a"), ("the dogs run", "b"), ("the cat sits on the mat", "a")]
    rows += [("a dog sits", "b"), ("the cats are happy", "a"), ("a big dog was sad", "b")]
    f.write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    model = str(tiny_model_dir("gpt2"))
    extract = ["extract", "--model", model, "--prompts", str(f), "--label-column", "label"]
    assert main([*extract, "--set", "s", "--db", db]) == 0
    capsys.readouterr()
    common = ["--model", model, "--set", "s", "--db", db, "--json"]
    with Store(db, read_only=True) as store:
        run_id = store.set_runs("s", store.find_model(model)["model_id"])["run_id"].iloc[0]
    verbs = [
        ["ls", "--db", db, "--json"],
        ["export", *common, "--out", str(tmp_path / "x.parquet")],
        ["similarity", *common],
        ["probe", *common, "--folds", "2", "--baseline", "none"],
        ["probes", *common, "--folds", "2", "--baseline", "none", "--method", "ridge"],
        ["stats", *common],
        ["project", *common],
        ["trajectories", *common],
        ["prompt", "--run", run_id, "--db", db, "--json"],
    ]
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(verbs), ",".join(HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("@@")]
    assert line, out.stderr[-3000:]
    report = json.loads(line[-1][2:])
    assert report["codes"] == [0] * len(verbs), out.stdout[-3000:] + out.stderr[-3000:]
    assert report["heavy"] == [], f"a read verb imported {report['heavy']}"


def test_the_shortcut_answers_only_when_the_cache_covers_the_set(tmp_path, tiny_model_dir):
    """An explicit dtype, an unknown model or a missing prompt goes through the job."""
    model = str(tiny_model_dir("gpt2"))
    with Store(tmp_path / "c.duckdb") as store:
        store.save_prompt_set("s", pd.DataFrame({"text": ["the cat runs", "the dogs run"]}))
        args = argparse.Namespace(model=model, set_name="s", dtype="auto")
        assert cached_runs(store, args) is None  # nothing stored yet
        mid, runs = ensure_runs(store, args, quiet=True)
        assert cached_runs(store, args)[0] == mid and len(cached_runs(store, args)[1]) == 2
        assert cached_runs(store, argparse.Namespace(**{**vars(args), "dtype": "float32"})) is None
        store.save_prompt_set("s", pd.DataFrame({"text": ["the cat runs", "a dog sits"]}))
        assert cached_runs(store, args) is None  # "a dog sits" is missing
        mid2, runs = ensure_runs(store, args, quiet=True)
        assert mid2 == mid and list(runs["text"]) == ["the cat runs", "a dog sits"]
