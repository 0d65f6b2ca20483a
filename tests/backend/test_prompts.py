"""Prompt files: formats, column choice, and one clear message per bad input."""

import pytest

from backend import prompts
from backend.errors import LayerScopeError


def test_txt_csv_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\n two \n")
    assert list(prompts.load_prompts(tmp_path / "a.txt")["text"]) == ["one", "two"]
    (tmp_path / "b.csv").write_text("sentence,lab,g\nhi there,pos,1\nbye,neg,2\n")
    df = prompts.load_prompts(tmp_path / "b.csv", label_column="lab", group_column="g")
    assert list(df["text"]) == ["hi there", "bye"] and list(df["label"]) == ["pos", "neg"]
    (tmp_path / "c.jsonl").write_text('{"text": "x", "label": 1}\n{"text": "y", "label": 0}\n')
    df = prompts.load_prompts(tmp_path / "c.jsonl", label_column="label")
    assert list(df["label"]) == ["1", "0"]


@pytest.mark.parametrize(
    "name,content,match",
    [
        ("a.pdf", b"x", "Unsupported"),
        ("a.csv", b"", "malformed|no rows"),
        ("a.jsonl", b'{"text": "x"}\n{broken', "malformed"),
        ("a.jsonl", b"[1, 2]\n", "object"),
        ("a.txt", b"\n\n", "No prompts"),
        ("a.csv", b"\xff\xfe\x00bad", "UTF-8"),
    ],
)
def test_bad_files(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(LayerScopeError, match=match):
        prompts.load_prompts(tmp_path / name)


def test_missing_column_lists_available(tmp_path):
    (tmp_path / "b.csv").write_text("text,label\nhi,1\n")
    with pytest.raises(LayerScopeError, match=r"No label column 'lbl'.*text, label"):
        prompts.load_prompts(tmp_path / "b.csv", label_column="lbl")


def test_missing_file():
    with pytest.raises(LayerScopeError, match="No prompt file"):
        prompts.load_prompts("/no/such.csv")
