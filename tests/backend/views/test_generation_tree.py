"""Branching generations: the prefix tree of one prompt's sampled continuations."""

import json

from backend.cli import main
from backend.views.generation import TREE_NOTE, prefix_tree


def test_prefix_tree_by_hand():
    runs = [["a", "b", "c"], ["a", "b", "d"], ["a", "x"], ["y"]]
    t = prefix_tree(runs)
    assert t["token"] is None and t["count"] == 4 and t["note"] == TREE_NOTE
    assert [(c["token"], c["count"]) for c in t["children"]] == [("a", 3), ("y", 1)]
    a = t["children"][0]
    assert [(c["token"], c["count"], c["runs"]) for c in a["children"]] == [
        ("b", 2, [0, 1]),
        ("x", 1, [2]),
    ]
    b = a["children"][0]
    assert [(c["token"], c["count"]) for c in b["children"]] == [("c", 1), ("d", 1)]
    assert b["children"][0]["children"] == [] and b["probability"] is None
    named = prefix_tree(runs, ["r0", "r1", "r2", "r3"])
    assert named["children"][1]["runs"] == ["r3"]


def _leaves(node, prefix=()):
    here = (*prefix, node["token"]) if node["token"] is not None else prefix
    if not node["children"]:
        return [(here, node["count"])]
    return [leaf for c in node["children"] for leaf in _leaves(c, here)]


def test_cli_generation_tree_json(db, tiny_model_dir, tmp_path, capsys):
    model = str(tiny_model_dir("gpt2"))
    f = tmp_path / "one.txt"
    f.write_text("the cat sits on the\n")
    argv = ["generation", "--model", model, "--prompts", str(f), "--samples", "4"]
    capsys.readouterr()
    code = main([*argv, "--max-new-tokens", "3", "--tree", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    r = json.loads(out.strip().splitlines()[-1])
    (p,) = r["prompts"]
    tree = p["tree"]
    assert tree["count"] == 4 and tree["note"] == TREE_NOTE
    # every run's continuation is one root-to-leaf path, counted once
    leaves = _leaves(tree)
    assert sum(n for _, n in leaves) == 4
    assert all(1 <= len(path) <= 3 for path, _ in leaves)  # --max-new-tokens 3
