"""Issue 28 (hardening round 3): each case refused with one sentence, or made safe."""

import io

import numpy as np
import pandas as pd
import pytest

from backend import directions, exports
from backend.errors import LayerScopeError

# -- CSV formula injection (OWASP): one helper for every CSV written -------------------------


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-cmd", "@SUM(A1)", "\tx", "\rx", "=HYPERLINK()"])
def test_csv_cells_that_start_like_a_formula_are_quoted(cell):
    df = pd.DataFrame({"text": [cell, "plain"], "x": [-1.5, 2]})
    raw = exports.table_csv(df).decode()
    assert raw.split("\n", 1)[1].lstrip('"').startswith("'" + cell[0])
    back = pd.read_csv(io.StringIO(raw), keep_default_na=False)
    assert back["text"][1] == "plain"
    assert back["x"].tolist() == [-1.5, 2.0]  # numbers stay numbers, negative ones included


def test_csv_column_names_are_quoted_too_and_parquet_keeps_the_raw_text():
    df = pd.DataFrame({"=evil": ["-1+2"]})
    text = exports.table_csv(df).decode()
    assert text.splitlines() == ['"\'=evil"', '"\'-1+2"']
    assert pd.read_parquet(io.BytesIO(exports.table_parquet(df)))["=evil"][0] == "-1+2"
    assert df["=evil"][0] == "-1+2"  # the caller's frame is not changed


def test_categorical_text_columns_are_quoted_too():
    df = pd.DataFrame({"c": pd.Categorical(["=1+1", "a"]), "n": [1, -2]})
    assert exports.table_csv(df).decode().splitlines()[1:] == ['"\'=1+1",1', '"a",-2']


def test_no_csv_is_written_outside_the_helper():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for sub in ("pages", "backend"):
        for f in (root / sub).rglob("*.py"):
            if f.name == "exports.py" or "demo" in f.parts:
                continue  # the demo's own bundled prompt files are inputs, not exports
            assert ".to_csv(" not in f.read_text(), f"{f}: CSV written without table_csv"


# -- steering: direction files, α and temperature ---------------------------------------------


def _npy(v) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(v))
    return buf.getvalue()


@pytest.mark.parametrize(
    "v,match",
    [
        ([np.inf, 1.0], "not finite"),
        ([np.nan, 1.0], "not finite"),
        ([1e300, 1e300], "larger than"),
        ([0.0, 0.0], "all zeros"),
        ([[1.0, 2.0]], "shape"),
    ],
)
def test_bad_direction_vectors_are_refused(v, match):
    with pytest.raises(LayerScopeError, match=match):
        directions.load_vector(_npy(v))


def test_a_pickled_npy_is_not_loaded():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(LayerScopeError, match="not a readable"):
        directions.load_vector(buf.getvalue())


def test_page_directions_come_only_from_uploads_in_the_cache_folder(tmp_path):
    db = tmp_path / "c" / "cache.duckdb"
    db.parent.mkdir()
    secret = tmp_path / "secret.npy"
    np.save(secret, np.ones(4))
    for value in (str(secret), "../secret.npy", "/etc/passwd.npy", "x.npy", str(db)):
        with pytest.raises(LayerScopeError) as e:
            directions.in_cache_folder(db, value)
        assert str(tmp_path) not in str(e.value) and "secret" not in str(e.value)
    name = directions.save_upload(db, _npy([1.0, 2.0]))
    path = directions.in_cache_folder(db, name)
    assert path.startswith(str(db.parent.resolve() / "directions"))
    np.testing.assert_array_equal(directions.load_vector(path), [1.0, 2.0])
    with pytest.raises(LayerScopeError):
        directions.save_upload(db, _npy([np.nan]))


def test_a_missing_direction_file_does_not_echo_its_folder(tmp_path):
    with pytest.raises(LayerScopeError) as e:
        directions.load_vector(tmp_path / "deep" / "nothere.npy")
    assert str(tmp_path) not in str(e.value) and "nothere.npy" in str(e.value)


@pytest.mark.parametrize(
    "kw",
    [
        {"alphas": (-1e308, 1e308)},
        {"alphas": (0.0, 5000.0)},
        {"alphas": (float("nan"),)},
        {"temperature": float("inf")},
        {"temperature": float("nan")},
        {"temperature": -1.0},
        {"temperature": 1e9},
    ],
)
def test_steering_alphas_and_temperature_are_bounded(kw):
    from backend.views.steering import Request

    with pytest.raises(LayerScopeError):
        Request(model="demo", prompts=("the cat",), direction="random", **kw)
    Request(
        model="demo", prompts=("the cat",), direction="random", alphas=(-8.0, 8.0), temperature=0.7
    )


@pytest.mark.parametrize("t", [float("inf"), float("nan"), 0.0, 101.0])
def test_sampling_temperature_is_finite_and_bounded(t):
    from backend.records import Sampling

    with pytest.raises(LayerScopeError, match="Temperature"):
        Sampling(temperature=t).validate()


# -- a prompt longer than the model's positions: the readout says it was cut ----------------
LONG = " ".join(["the cat near the dogs runs"] * 30)  # > the demo model's 64 positions


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["lens", "attention"])
def test_a_prompt_cut_to_the_models_positions_says_so(verb, tmp_path, capsys):
    import json

    from backend.cli import main

    argv = [verb, "--db", str(tmp_path / "c.duckdb"), "--model", "demo", "--prompt", LONG]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["truncated"] is True and "cut" in r["note"] and len(r["tokens"]) == 64
    assert main(argv) == 0
    assert "note: The prompt has" in capsys.readouterr().out
    assert main([verb, "--db", str(tmp_path / "c.duckdb"), "--model", "demo", "--prompt", "the cat",
                 "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["truncated"] is False


# -- patching: an answer that is not one vocabulary token ------------------------------------
def test_an_answer_outside_the_vocabulary_is_refused_with_the_nearest_tokens():
    from backend import models
    from backend.views.patching import token_id

    tok = models.load_tokenizer(models.resolve("demo").path)
    with pytest.raises(LayerScopeError, match="not one token") as e:
        token_id(tok, "xyzzyq")  # the word-level vocabulary maps it to <unk>: no answer
    assert "<unk>" not in str(e.value)
    with pytest.raises(LayerScopeError, match=r"nearest: .*'runs'"):
        token_id(tok, "runz")
    assert token_id(tok, "runs") == tok.convert_tokens_to_ids("runs")


@pytest.mark.slow
def test_patch_cli_refuses_an_unknown_answer(tmp_path, capsys):
    from backend.cli import main

    argv = ["patch", "--db", str(tmp_path / "c.duckdb"), "--model", "demo"]
    argv += ["--clean", "the cat runs", "--corrupted", "the cats run", "--answer", "xyzzyq"]
    assert main(argv) == 2
    assert "not one token" in capsys.readouterr().err


# -- prompt files: size caps before tokenizing, folders, nulls --------------------------------
def _extract(tmp_path, *extra):
    from backend.cli import main

    return main(["extract", "--db", str(tmp_path / "c.duckdb"), "--model", "demo", *extra])


@pytest.mark.parametrize("suffix", [".txt", ".csv", ".jsonl"])
def test_a_prompt_longer_than_the_cap_is_refused_before_tokenizing(tmp_path, capsys, suffix):
    from backend import prompts

    long = "word " * (prompts.MAX_PROMPT_CHARS // 5 + 10)
    body = {".txt": f"short one\n{long}\n", ".csv": f"text\nshort one\n{long}\n",
            ".jsonl": f'{{"text": "short one"}}\n{{"text": "{long}"}}\n'}[suffix]  # fmt: skip
    f = tmp_path / f"p{suffix}"
    f.write_text(body)
    assert _extract(tmp_path, "--prompts", str(f)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Prompt 2 has" in err and "at most 100,000" in err
    with pytest.raises(LayerScopeError, match="at most 100,000"):
        prompts.from_lines(long)  # the Run page's typed prompts
    with pytest.raises(LayerScopeError, match="at most 100,000"):
        prompts.select_columns(prompts.read_table(body.encode(), f.name))  # an upload


def test_a_prompt_file_over_the_size_cap_is_refused_unread(tmp_path, capsys):
    from backend import prompts

    f = tmp_path / "huge.txt"
    with open(f, "wb") as fh:  # sparse: no 64 MB written
        fh.truncate(prompts.MAX_FILE_BYTES + 1)
    assert _extract(tmp_path, "--prompts", str(f)) == 2
    assert "at most 64 MB" in capsys.readouterr().err
    with pytest.raises(LayerScopeError, match="at most 64 MB"):
        prompts.read_table(b"x" * (prompts.MAX_FILE_BYTES + 1), "up.txt")


def test_a_folder_as_prompts_is_one_sentence(tmp_path, capsys):
    d = tmp_path / "dir.txt"
    d.mkdir()
    assert _extract(tmp_path, "--prompts", str(d)) == 2
    assert "is a folder" in capsys.readouterr().err


def test_jsonl_null_texts_are_dropped_not_an_internal_error(tmp_path, capsys):
    from backend import prompts

    f = tmp_path / "n.jsonl"
    f.write_text('{"text": null, "label": null}\n{"text": "the cat", "label": "a"}\n')
    df = prompts.load_prompts(f, label_column="label")
    assert df["text"].tolist() == ["the cat"] and df["label"].tolist() == ["a"]
    f.write_text('{"text": null}\n')
    assert _extract(tmp_path, "--prompts", str(f)) == 2
    assert "empty" in capsys.readouterr().err


# -- an existing set is replaced only with --replace; a failed extract leaves no new set -----
@pytest.mark.slow
def test_extract_refuses_to_replace_a_set_without_replace(tmp_path, capsys):
    from backend.store import Store

    f = tmp_path / "one.txt"
    f.write_text("the cat runs\n")
    assert _extract(tmp_path, "--set", "agreement") == 0  # the bundled 400 prompts
    capsys.readouterr()
    assert _extract(tmp_path, "--prompts", str(f), "--set", "agreement") == 2
    assert "--replace" in capsys.readouterr().err
    with Store(tmp_path / "c.duckdb") as s:
        n = len(s.get_set("agreement"))
    assert n > 1
    assert _extract(tmp_path, "--prompts", str(f)) == 0  # a new set: fine
    assert _extract(tmp_path, "--prompts", str(f)) == 0  # the same prompts again: fine
    f.write_text("the dogs run\n")
    assert _extract(tmp_path, "--prompts", str(f)) == 2
    assert _extract(tmp_path, "--prompts", str(f), "--replace") == 0
    with Store(tmp_path / "c.duckdb") as s:
        assert s.get_set("one")["text"].tolist() == ["the dogs run"]


def test_a_failed_extract_leaves_no_new_set(tmp_path, capsys):
    from backend.cli import main
    from backend.store import Store

    f = tmp_path / "fresh.txt"
    f.write_text("the cat runs\n")
    db = str(tmp_path / "c.duckdb")
    argv = ["extract", "--db", db, "--model", str(tmp_path / "no-model"), "--prompts", str(f)]
    assert main(argv) == 2
    with Store(db) as s:
        assert "fresh" not in set(s.list_sets()["set_name"])


# -- tracebacks -> one sentence ----------------------------------------------------------------
def _one_error_line(err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1, err
    assert "Traceback" not in err and "internal error" not in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ["trajectories", "--set", "x", "--sample", "-1"],
        ["similarity", "--set", "x", "--max-units", "-5"],
        ["lens", "--prompt", "x", "--top", "-1"],
        ["lens", "--prompt", "x", "--top", "1000000000"],
        ["patch", "--clean", "a", "--corrupted", "b", "--top", "1000000000"],
        ["jobs", "--limit", "-1"],
        ["extract", "--set", "x", "--gpus-per-worker", "nan"],
        ["extract", "--set", "x", "--workers", "0"],
        ["steer", "--layer", "1", "--prompt", "a", "--temperature", "inf"],
        ["generate", "--set", "x", "--top-p", "nan"],
        ["stats", "--set", "x", "--max-runs", "1e3"],
    ],
)
def test_bad_numbers_are_refused_when_parsed(argv, tmp_path, capsys):
    from backend.cli import main

    assert main([*argv, "--db", str(tmp_path / "c.duckdb")]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "argument --" in err
    assert not (tmp_path / "c.duckdb").exists()  # refused before the cache is opened


@pytest.mark.parametrize("value", ["nan", "-1", "inf", "0", "lots"])
def test_a_bad_job_budget_is_one_sentence(value, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAYERSCOPE_MAX_JOB_GB", value)
    assert _extract(tmp_path, "--set", "agreement") == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "LAYERSCOPE_MAX_JOB_GB" in err and "positive number of GB" in err


@pytest.fixture
def damaged_models(tmp_path):
    import os
    import shutil

    from backend import models

    out = {}
    for kind in ("config", "weights", "tokenizer"):
        d = tmp_path / f"m-{kind}"
        shutil.copytree(models.resolve("demo").path, d)
        (d / "layerscope.json").unlink(missing_ok=True)
        out[kind] = d
    (out["config"] / "config.json").write_text('{"model_type": "gpt2", ')
    w = out["weights"] / "model.safetensors"
    os.truncate(w, w.stat().st_size // 2)
    for f in out["tokenizer"].glob("tokenizer*"):
        f.unlink()
    return out


@pytest.mark.parametrize(
    "kind,needle",
    [
        ("config", "config.json of the model"),
        ("weights", "truncated or damaged"),
        ("tokenizer", "no usable tokenizer"),
    ],
)
def test_a_damaged_model_folder_is_one_sentence(damaged_models, kind, needle, tmp_path, capsys,
                                                caplog):  # fmt: skip
    from backend.store import Store

    f = tmp_path / "p.txt"
    f.write_text("the cat runs\n")
    rc = _extract(tmp_path, "--model", str(damaged_models[kind]), "--prompts", str(f))
    assert rc == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert needle in err
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= 30]  # no stack printed
    with Store(tmp_path / "c.duckdb") as s:
        assert s.list_sets().empty  # the failed extract left no set


def test_a_sqlite_file_as_db_is_refused_by_its_header(tmp_path, capsys):
    import sqlite3

    from backend.cli import main

    db = tmp_path / "x.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    before = db.read_bytes()
    assert main(["ls", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "not a valid DuckDB database" in err and "SQLite" in err
    assert db.read_bytes() == before


def test_a_damaged_derived_cache_entry_is_treated_as_missing(tmp_path):
    from backend.store import Store
    from backend.views import patching, steering

    with Store(tmp_path / "c.duckdb") as s:
        preq = patching.Request(model="demo", clean="the cat runs", corrupted="the cats run")
        s.cache_put(patching.CACHE_KIND, patching.cache_key(preq), b"\x00damaged")
        assert patching.cached(s, preq) is None
        sreq = steering.Request(model="demo", prompts=("the cat",), direction="random")
        s.cache_put(steering.CACHE_KIND, steering.cache_key(sreq), b"PK\x03\x04cut")
        assert steering.cached(s, sreq) is None


@pytest.mark.slow
def test_a_corrupted_cache_block_is_reported_as_damage_not_as_unaffected(tmp_path, capsys):
    """Each data block of a small cache overwritten in turn: a block that breaks reading (not
    opening) is reported as damage, never as an internal error with 'stored runs unaffected'."""
    import shutil

    from backend.cli import main
    from backend.store.connection import BLOCK_SIZE

    f = tmp_path / "p.txt"
    f.write_text("the cat runs\nthe dog sits\nthe cats run\nthe dogs sit\n")
    assert _extract(tmp_path, "--prompts", str(f)) == 0
    good, db = tmp_path / "c.duckdb", tmp_path / "bad.duckdb"
    seen = []
    for off in range(12_288, good.stat().st_size, BLOCK_SIZE):
        shutil.copy(good, db)
        with open(db, "r+b") as fh:
            fh.seek(off + 64)
            fh.write(b"\xa5" * 1024)
        capsys.readouterr()
        rc = main(["stats", "--db", str(db), "--set", "p", "--model", "demo"])
        err = capsys.readouterr().err
        assert rc in (0, 2) and "unaffected" not in err, err
        seen.append("cannot all be read" in err)
    assert any(seen), "no block broke reading only"


def test_labels_that_are_all_distinct_give_no_silhouette_not_an_error():
    from backend.analysis.projection import silhouette_per_layer

    x = np.random.default_rng(0).standard_normal((2, 5, 4))
    assert np.isnan(silhouette_per_layer(x, list("abcde"))).all()
    assert np.isfinite(silhouette_per_layer(x, list("aabbb"))).all()


def test_a_full_disk_when_keeping_a_derived_result_still_shows_the_result(tmp_path, monkeypatch):
    import duckdb

    from backend import derived
    from backend.store import Store

    with Store(tmp_path / "c.duckdb") as s:

        def full(*a, **k):
            raise duckdb.IOException("Could not write file: No space left on device")

        monkeypatch.setattr(s, "cache_put", full)
        assert derived.save(s, "k", "key", b"x") is False  # logged, not raised
        monkeypatch.setattr(s, "cache_put", lambda *a: (_ for _ in ()).throw(KeyError("bug")))
        with pytest.raises(KeyError):  # a bug is still a bug
            derived.save(s, "k", "key", b"x")


def test_steer_store_runs_respects_the_job_budget(tmp_path, capsys, monkeypatch):
    from backend.cli import main
    from backend.store import Store

    monkeypatch.setenv("LAYERSCOPE_MAX_JOB_GB", "0.000001")  # 1 kB
    db = str(tmp_path / "c.duckdb")
    argv = ["steer", "--db", db, "--model", "demo", "--prompt", "the cat", "--layer", "1"]
    argv += ["--direction", "random", "--alphas=0,1", "--max-new-tokens", "2", "--store-runs"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "LAYERSCOPE_MAX_JOB_GB" in err
    with Store(db) as s:
        assert s.summary()["runs"] == 0 and s.list_sets().empty


def test_a_read_only_cache_can_still_be_listed_and_a_write_says_why(tmp_path, capsys, monkeypatch):
    import duckdb

    import backend.store.connection as store_mod
    from backend.cli import main

    f = tmp_path / "p.txt"
    f.write_text("the cat runs\n")
    assert _extract(tmp_path, "--prompts", str(f)) == 0
    real = store_mod.duckdb.connect

    def read_only_mount(target, read_only=False, config=None):
        if not read_only:
            raise duckdb.IOException(f'Cannot open file "{target}": Read-only file system')
        return real(target, read_only=True, config=config or {})

    monkeypatch.setattr(store_mod.duckdb, "connect", read_only_mount)
    capsys.readouterr()
    assert main(["ls", "--db", str(tmp_path / "c.duckdb")]) == 0
    assert ": 1 runs" in capsys.readouterr().out
    assert _extract(tmp_path, "--set", "agreement") == 2
    err = capsys.readouterr().err
    _one_error_line(err)
    assert "read-only" in err
