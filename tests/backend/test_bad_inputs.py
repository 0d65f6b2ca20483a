"""Hostile and careless inputs: each becomes one LayerScopeError sentence, fast, nothing lost."""

import time

import pandas as pd
import pytest

from backend.errors import LayerScopeError
from backend.patterns import Pattern
from backend.prompts import slug, validate_set_name
from backend.views.generation import answer_of


def test_a_catastrophic_pattern_is_stopped_in_seconds():
    t0 = time.monotonic()
    with pytest.raises(LayerScopeError, match="too long to match"):
        answer_of(["x" * 5000], r"(x+x+)+y")
    assert time.monotonic() - t0 < 5


def test_the_time_budget_is_shared_by_all_searches():
    p = Pattern(r"(x+x+)+y", total_s=0.5)
    t0 = time.monotonic()
    with pytest.raises(LayerScopeError):
        for _ in range(100):
            p.search("x" * 2000)
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("bad", ["(unclosed", "x" * 201, "[z-a]"])
def test_bad_patterns_are_one_sentence(bad):
    with pytest.raises(LayerScopeError, match="answer pattern"):
        Pattern(bad)


def test_a_good_pattern_still_answers():
    assert answer_of(["the", "cat", "is"], r"cat (\w+)") == "is"


@pytest.mark.parametrize(
    "name", ["../../../../elsewhere/trav", "a/b", "..", ".hidden", "x" * 65, "", "a\x00b", "<b>"]
)
def test_set_names_that_could_reach_paths_or_markup_are_refused(name):
    with pytest.raises(LayerScopeError):
        validate_set_name(name)


@pytest.mark.parametrize("name", ["agreement", "my prompts (v2)", "set_1.csv-like", "Größe"])
def test_ordinary_set_names_pass(name):
    assert validate_set_name(f"  {name} ") == name


def test_slugs_stay_inside_the_folder():
    for raw in ["../../../../elsewhere/trav", "..", "/etc/passwd", "a b/c"]:
        s = slug(raw)
        assert "/" not in s and not s.startswith(".") and s


def test_the_store_refuses_a_traversing_set_name_and_keeps_what_it_has(tmp_path):
    from backend.store import Store

    with Store(tmp_path / "s.duckdb") as s:
        s.save_prompt_set("good", pd.DataFrame({"text": ["a", "b"]}))
        with pytest.raises(LayerScopeError):
            s.save_prompt_set("../../evil", pd.DataFrame({"text": ["c"]}))
        assert list(s.list_sets()["set_name"]) == ["good"]


def test_cli_extract_with_a_traversing_set_name_is_one_line(tmp_path, capsys):
    from backend.cli import main

    f = tmp_path / "p.txt"
    f.write_text("the cat runs\n")
    db = str(tmp_path / "c.duckdb")
    code = main(["extract", "--db", db, "--prompts", str(f), "--set", "../../../../elsewhere/trav"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: The set name") and len(err.splitlines()) == 1


def test_export_refuses_a_missing_folder_and_a_folder(tmp_path, capsys):
    from backend.cli import main

    db = str(tmp_path / "c.duckdb")
    assert (
        main(["export", "--db", db, "--set", "x", "--out", str(tmp_path / "no" / "a.parquet")]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", "--db", db, "--set", "x", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def _garbage(t):
    (t / "c.duckdb").write_bytes(b"\x00garbage" * 500)
    return t / "c.duckdb"


def _under_a_file(t):
    (t / "f").write_text("x")
    return t / "f" / "c.duckdb"


@pytest.mark.parametrize(
    "make,expect",
    [
        (_garbage, "not a valid"),
        (_under_a_file, "is a file, not a folder"),
        (lambda t: t, "is a folder"),
    ],
)
def test_bad_cache_files_are_one_line(tmp_path, capsys, make, expect):
    from backend.cli import main

    db = make(tmp_path)
    before = db.read_bytes() if db.is_file() else None
    assert main(["ls", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err and len(err.strip().splitlines()) == 1
    if before is not None:
        assert db.read_bytes() == before  # a damaged file is never touched


def test_batch_tokens_zero_is_refused_before_work(tmp_path, capsys):
    from backend.cli import main

    db = str(tmp_path / "c.duckdb")
    assert main(["extract", "--db", db, "--set", "agreement", "--batch-tokens", "0"]) == 2
    assert "argument --batch-tokens: must be at least 1" in capsys.readouterr().err


def test_duplicate_prompts_are_kept_once_and_every_view_works(tmp_path, capsys, tiny_model_dir):
    from backend.cli import main

    f = tmp_path / "d.csv"
    rows = [
        "the cat runs,a",
        "the cat runs,a",
        "the dogs run,b",
        "the dog runs,a",
        "the cats run,b",
    ]
    f.write_text("text,label\n" + "\n".join(rows * 2) + "\n")
    db = str(tmp_path / "c.duckdb")
    model = str(tiny_model_dir("gpt2"))
    base = ["--db", db, "--model", model, "--set", "d"]
    assert (
        main(["extract", *base[:4], "--prompts", str(f), "--set", "d", "--label-column", "label"])
        == 0
    )
    assert "6 repeated prompt(s) kept once" in capsys.readouterr().err
    for verb in (
        ["project"],
        ["similarity", "--kind", "prompt"],
        ["probe", "--folds", "2", "--baseline", "none"],
        ["stats"],
    ):
        assert main([*verb, *base]) == 0, verb
    capsys.readouterr()


def test_model_cka_refuses_token_units_of_different_tokenizers(tmp_path, capsys, tiny_model_dir):
    """The tiny llama adds <bos>, gpt2 does not: position k is a different word."""
    from backend.cli import main

    f = tmp_path / "p.txt"
    f.write_text("the cat runs\nthe dogs sit\nthe cat sits on the mat\n")
    db = str(tmp_path / "c.duckdb")
    a, b = str(tiny_model_dir("gpt2")), str(tiny_model_dir("llama"))
    for m in (a, b):
        assert main(["extract", "--db", db, "--model", m, "--prompts", str(f), "--set", "p"]) == 0
    capsys.readouterr()
    code = main(
        [
            "similarity",
            "--db",
            db,
            "--model",
            a,
            "--set",
            "p",
            "--kind",
            "model-cka",
            "--other",
            b,
            "--units",
            "tokens",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and ("tokenize the prompts differently" in err or "do not share" in err), err
    assert (
        main(
            [
                "similarity",
                "--db",
                db,
                "--model",
                a,
                "--set",
                "p",
                "--kind",
                "model-cka",
                "--other",
                b,
                "--units",
                "last",
            ]
        )
        == 0
    )


@pytest.fixture
def tiny_disk(tmp_path):
    """A 6 MB tmpfs (root only): a job that fits the pre-flight estimate but not DuckDB's log."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.slow
def test_a_full_disk_is_one_sentence_and_loses_nothing(tiny_disk, tmp_path, capsys):
    import subprocess

    from backend.cli import main

    f = tmp_path / "p.txt"
    f.write_text(
        "\n".join(
            f"the cat near the dogs runs and the big dog sits on the mat {i}" for i in range(250)
        )
    )
    db = tiny_disk / "c.duckdb"
    argv = ["extract", "--db", str(db), "--model", "demo", "--prompts", str(f), "--set", "big"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: The disk holding {db} is full") and "nothing stored" in err
    assert main(["delete", "--db", str(db), "--set", "big"]) == 2  # says how to reclaim
    assert "needs a little room" in capsys.readouterr().err
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    assert main(["ls", "--db", str(db), "--json"]) == 0
    stored = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*argv, "--json"]) == 0  # the same command computes only what is missing
    again = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["cached_runs"] + again["runs"] == 250
    assert again["cached_runs"] == stored["summary"]["runs"] > 0


def test_over_long_prompts_are_truncated_to_the_models_limit_and_flagged(tmp_path, capsys):
    from backend.cli import main
    from backend.store import Store

    long = " ".join(["the cat near the dogs"] * 30)  # 151 tokens; the demo reads 64
    f = tmp_path / "p.txt"
    f.write_text(f"the cat runs\n{long}\n")
    db = str(tmp_path / "c.duckdb")
    assert main(["extract", "--db", db, "--model", "demo", "--prompts", str(f), "--set", "p"]) == 0
    assert "truncated to 64 (the model's maximum)" in capsys.readouterr().out
    with Store(db, read_only=True) as s:
        runs = s.set_runs("p", s.find_model("demo")["model_id"])
        assert sorted(runs["n_tokens"]) == [4, 64] and runs["truncated"].sum() == 1
    assert main(["lens", "--db", db, "--model", "demo", "--prompt", long, "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()[-1]
    assert "the model reads at most 64" in out


def test_a_prompt_without_tokens_is_skipped_with_a_note(tmp_path, capsys, monkeypatch):
    """Some tokenizers map a line to nothing; the rest of the job proceeds."""
    from backend.capture import extract
    from backend.cli import main

    real = extract.tokenize

    def dropping(tok, texts, max_tokens=None):
        out = real(tok, texts, max_tokens)
        for t in out:
            if t.text == "nothing here":
                t.ids, t.offsets, t.special = [], [], []
        return out

    monkeypatch.setattr(extract, "tokenize", dropping)
    f = tmp_path / "p.txt"
    f.write_text("the cat runs\nnothing here\nthe dogs run\n")
    db = str(tmp_path / "c.duckdb")
    assert (
        main(
            ["extract", "--db", db, "--model", "demo", "--prompts", str(f), "--set", "p", "--json"]
        )
        == 0
    )
    r = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["runs"] == 2 and r["skipped"] == 1 and "no tokens" in r["notes"][0]


def test_json_output_is_strict_even_with_undefined_numbers():
    import json

    import numpy as np

    from backend.cli import dumps

    out = dumps({"r": float("nan"), "grid": np.array([[np.nan, 1.0], [np.inf, 2.0]]), "n": 3})
    assert json.loads(out) == {"r": None, "grid": [[None, 1.0], [None, 2.0]], "n": 3}
    assert "NaN" not in out and "Infinity" not in out


def test_ray_workers_beyond_this_machines_cores_are_refused(monkeypatch):
    """`--workers 200` on a 2-core machine started 53 Ray processes (7 GB): the CLI and the Run
    page share engine_options, which now refuses more CPU workers than cores (a cluster
    address lifts the limit: its own resources are checked when the job starts); a NaN GPU
    share is refused too."""
    import importlib.util

    from backend.jobs.base import engine_options

    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray not installed")
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert engine_options("ray", workers=2)["workers"] == 2
    with pytest.raises(LayerScopeError, match="2 CPU cores"):
        engine_options("ray", workers=200)
    assert engine_options("ray", workers=200, ray_address="10.0.0.1:6379")["workers"] == 200
    with pytest.raises(LayerScopeError, match="GPU share"):
        engine_options("ray", workers=1, gpus_per_worker=float("nan"))


@pytest.mark.parametrize(
    "address", ["not an address", "host:99999", "http://x:1", "10.0.0.1", "a b:1"]
)
def test_a_malformed_ray_address_is_one_sentence(address):
    from backend.jobs.base import check_ray_address

    with pytest.raises(LayerScopeError, match="is not a cluster address"):
        check_ray_address(address)
    for ok in ("auto", "10.0.0.5:6379", "head-node.local:6379"):
        check_ray_address(ok)


def test_a_ray_client_address_without_ray_client_says_how_to_install_it():
    import importlib.util

    from backend.jobs.base import check_ray_address

    if importlib.util.find_spec("grpc") is not None:
        pytest.skip("ray[client] is installed here")
    with pytest.raises(LayerScopeError, match=r"ray\[client\]"):
        check_ray_address("ray://head:10001")


def test_an_unreachable_ray_cluster_is_refused_at_once():
    """Ray retries an unreachable head for minutes; a closed port answers at once."""
    import importlib.util
    import socket

    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray not installed")
    from backend.jobs.ray_engine import check_reachable

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LayerScopeError, match="does not answer"):
        check_reachable(f"127.0.0.1:{port}", timeout_s=2)
    with socket.socket() as srv:  # and one that does
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        check_reachable(f"127.0.0.1:{srv.getsockname()[1]}", timeout_s=2)
