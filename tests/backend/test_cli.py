"""The CLI: the issue's commands, --json summaries, one-line errors."""

import json

import pyarrow.parquet as pq
import pytest

from backend.cli import main


def run_json(capsys, *argv):
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out), out.err


def test_extract_ls_export_delete(db, tmp_path, tiny_model_dir, capsys):
    f = tmp_path / "p.csv"
    f.write_text("sentence,label\nthe cat runs,a\nthe dogs run,b\nthe cat sits on the mat,a\n")
    model = str(tiny_model_dir("llama"))
    code, r, _ = run_json(
        capsys,
        "extract",
        "--model",
        model,
        "--prompts",
        str(f),
        "--text-column",
        "sentence",
        "--label-column",
        "label",
        "--set",
        "sent",
    )
    assert code == 0
    assert {"runs", "cached_runs", "tokens", "seconds", "set"} <= set(r)
    assert (r["runs"], r["cached_runs"], r["set"]) == (3, 0, "sent")
    assert r["tokens"] == 3 + 3 + 6 + 3  # words + <bos> per prompt
    code, r2, _ = run_json(capsys, "extract", "--model", model, "--set", "sent")
    assert (r2["runs"], r2["cached_runs"], r2["tokens"]) == (0, 3, 0)

    code, ls, _ = run_json(capsys, "ls")
    assert ls["summary"]["runs"] == 3 and ls["sets"][0]["set_name"] == "sent"
    assert ls["models"][0]["bytes"] == 15 * 4 * 32 * 2
    assert main(["ls"]) == 0 and "sent" in capsys.readouterr().out

    out = tmp_path / "acts.parquet"
    code, ex, _ = run_json(
        capsys, "export", "--model", model, "--set", "sent", "--layer", "2", "--out", str(out)
    )
    t = pq.read_table(out)
    assert ex["rows"] == t.num_rows == 15 and set(t["layer"].to_pylist()) == {2}
    assert sorted(set(t["label"].to_pylist())) == ["a", "b"]

    code, d, _ = run_json(capsys, "delete", "--set", "sent")
    assert d["deleted_runs"] == 3


def test_truncation_is_flagged_and_warned(db, tmp_path, tiny_model_dir, capsys):
    f = tmp_path / "lines.txt"
    f.write_text("the cat sits on the mat near the dog\nthe cat\n")
    assert (
        main(
            [
                "extract",
                "--model",
                str(tiny_model_dir("gpt2")),
                "--prompts",
                str(f),
                "--max-tokens",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "1 prompt(s) longer than 4 tokens were truncated to 4" in out


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["extract", "--model", "demo-nope/x", "--set", "s"], "No prompt set 's'"),
        (["extract", "--prompts", "/no/file.txt"], "No prompt file"),
        (["extract", "--model", "./missing", "--prompts", "{txt}"], "No model directory"),
        (["extract"], "Give --prompts FILE or --set NAME"),
        (["extract", "--prompts", "{txt}", "--max-tokens", "0"], "at least 1"),
        (["export", "--model", "{model}", "--set", "x", "--out", "o.parquet"], "no runs"),
        (["delete"], "exactly one"),
    ],
)
def test_bad_input_is_one_line_exit_2(db, tmp_path, tiny_model_dir, capsys, argv, needle):
    txt = tmp_path / "p.txt"
    txt.write_text("hello\n")
    argv = [a.format(txt=txt, model=tiny_model_dir("gpt2")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]
