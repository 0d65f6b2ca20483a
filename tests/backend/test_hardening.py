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
        Request("demo", ("the cat",), direction="random", **kw)
    Request("demo", ("the cat",), direction="random", alphas=(-8.0, 8.0), temperature=0.7)


@pytest.mark.parametrize("t", [float("inf"), float("nan"), 0.0, 101.0])
def test_sampling_temperature_is_finite_and_bounded(t):
    from backend.capture.records import Sampling

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


def test_patch_cli_refuses_an_unknown_answer(tmp_path, capsys):
    from backend.cli import main

    argv = ["patch", "--db", str(tmp_path / "c.duckdb"), "--model", "demo"]
    argv += ["--clean", "the cat runs", "--corrupted", "the cats run", "--answer", "xyzzyq"]
    assert main(argv) == 2
    assert "not one token" in capsys.readouterr().err
