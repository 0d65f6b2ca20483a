"""CLI twins of the Probes, Lens and Stats views on tiny models: same numbers, one-line errors."""

import json

import numpy as np
import pytest

from backend.cli import main


@pytest.fixture
def labelled(tmp_path):
    """24 distinct prompts; the label is the verb (runs -> a, sits -> b)."""
    nouns = ["cat", "dog", "mat", "cats", "dogs"]
    rows = [
        f"the {nouns[i % 5]} {'runs' if i % 2 else 'sits'} near the {nouns[i // 5]},"
        f"{'a' if i % 2 else 'b'}"
        for i in range(24)
    ]
    f = tmp_path / "lab.csv"
    f.write_text("text,label\n" + "\n".join(rows) + "\n")
    return f


def extract(model: str, prompts) -> None:
    argv = ["extract", "--model", model, "--prompts", str(prompts), "--set", "lab"]
    assert main([*argv, "--label-column", "label", "--json"]) == 0


def run_json(capsys, *argv):
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out.strip().splitlines()[-1]), out.err


def test_probe_json_matches_the_analysis(db, labelled, tiny_model_dir, capsys, tmp_path):
    model = str(tiny_model_dir("gpt2"))
    extract(model, labelled)
    w = tmp_path / "w.npz"
    opts = ["--model", model, "--set", "lab", "--folds", "4", "--baseline", "none"]
    code, r, _ = run_json(
        capsys, "probe", *opts, "--layers", "1:3", "--pool", "mean", "--weights", str(w)
    )
    assert code == 0, r
    assert r["layers"] == [1, 2, 3] and r["classes"] == ["a", "b"]
    assert r["n_units"] == r["n_prompts"] == 24 and r["majority"] == 0.5
    # the verb is the label and the mean over tokens contains it: a probe must find it
    assert max(r["accuracy"]) > 0.9
    for k in ("ci_low", "ci_high", "control", "selectivity", "macro_f1"):
        assert len(r[k]) == 3
    saved = np.load(w)
    assert saved["weights"].shape == (3, 1, 32) and saved["classes"].tolist() == ["a", "b"]
    assert main(["probe", *opts, "--method", "ridge"]) == 0
    assert "selectivity" in capsys.readouterr().out


def test_probe_accuracy_equals_scikit_learn_on_the_stored_vectors(
    db, labelled, tiny_model_dir, capsys
):
    """Independent path: the store's last-token vectors through scikit-learn's RidgeClassifier
    on the same grouped folds give the CLI's per-layer accuracy."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from backend.analysis.probes import grouped_folds
    from backend.store import Store

    model = str(tiny_model_dir("gpt2"))
    extract(model, labelled)
    opts = ["--model", model, "--set", "lab", "--folds", "4", "--baseline", "none"]
    code, r, _ = run_json(capsys, "probe", *opts, "--method", "ridge", "--layers", "0:3")
    assert code == 0, r
    with Store(db, read_only=True) as s:
        runs = s.set_runs("lab", s.find_model(model)["model_id"])
        x = s.pooled(runs["run_id"].tolist(), "last", [0, 1, 2, 3])
    y = (runs["label"] == "b").astype(int).to_numpy()
    splits = grouped_folds(y, runs["idx"].to_numpy(), 4, 0)
    clf = make_pipeline(StandardScaler(), RidgeClassifier(alpha=10.0))
    want = [cross_val_score(clf, x[layer], y, cv=splits).mean() for layer in range(4)]
    np.testing.assert_allclose(r["accuracy"], want, atol=1e-4)


def test_probe_with_a_named_baseline_model(db, labelled, tiny_model_dir, capsys):
    model, other = str(tiny_model_dir("gpt2")), str(tiny_model_dir("llama"))
    extract(model, labelled)
    code, r, _ = run_json(
        capsys, "probe", "--model", model, "--set", "lab", "--folds", "3", "--baseline", other
    )
    assert code == 0 and r["baseline"]["model"] == other
    assert len(r["baseline"]["accuracy"]) == len(r["accuracy"])


def test_lens_prompt_and_set(db, labelled, tiny_model_dir, capsys):
    model = str(tiny_model_dir("gpt2"))
    prompt = ["--prompt", "the cat sits on the", "--top", "3"]
    code, r, _ = run_json(capsys, "lens", "--model", model, *prompt)
    assert code == 0 and r["tokens"] == ["the", "cat", "sits", "on", "the"]
    assert np.array(r["top_probs"]).shape == (4, 5, 3) and len(r["top_tokens"][0][0]) == 3
    assert r["kl_to_final"][-1] == pytest.approx([0] * 5, abs=1e-3)
    assert r["final_rank"][-1] == [0] * 5 and len(r["commitment_depth"]) == 5
    extract(model, labelled)
    code, s, _ = run_json(capsys, "lens", "--model", model, "--set", "lab")
    assert code == 0 and s["n_positions"] == 24 and s["top1_is_final"][-1] == 1.0
    assert sum(s["commitment_counts"]) == 24


def test_lens_on_an_encoder_is_a_one_line_error(db, tiny_model_dir, capsys):
    code = main(["lens", "--model", str(tiny_model_dir("bert")), "--prompt", "the cat"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: The logit lens does not apply")
    assert len(err.strip().splitlines()) == 1
    assert main(["lens", "--model", str(tiny_model_dir("gpt2"))]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_stats_json(db, labelled, tiny_model_dir, capsys):
    model = str(tiny_model_dir("llama"))
    extract(model, labelled)
    code, r, _ = run_json(capsys, "stats", "--model", model, "--set", "lab")
    assert code == 0 and r["layers"] == [0, 1, 2, 3]
    assert r["n_tokens"] == 24 * 7  # <bos> + 6 words
    top = r["massive_top"][0]
    assert len(top) == 5 and {"value", "dim", "token"} <= set(top[0])
    assert all(1 <= v <= 32 for v in r["effective_rank"])
