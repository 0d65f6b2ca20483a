"""`python -m backend project` on a tiny model: coordinates, explained variance, cache, errors."""

import json

import numpy as np
import pytest

from backend.cli import main


@pytest.fixture
def model(tmp_path, tiny_model_dir, db):
    """12 labelled prompts extracted on a tiny GPT-2 (set 'p')."""
    rows = [
        f"the {w} {v} near the mat,{'a' if i % 2 else 'b'}"
        for i, (w, v) in enumerate(
            (w, v)
            for w in ("cat", "dog", "cats", "dogs", "bird", "birds")
            for v in ("runs", "sits")
        )
    ]
    f = tmp_path / "p.csv"
    f.write_text("text,label\n" + "\n".join(rows) + "\n")
    m = str(tiny_model_dir("gpt2"))
    argv = ["extract", "--model", m, "--prompts", str(f), "--set", "p", "--label-column", "label"]
    assert main([*argv, "--json"]) == 0
    return m


def run_json(capsys, *argv):
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr().out.strip().splitlines()[-1]
    return code, json.loads(out)


def test_pca_prompt_coordinates_equal_the_analysis(model, db, capsys):
    code, r = run_json(
        capsys, "project", "--model", model, "--set", "p", "--layers", "1:2", "--no-standardize"
    )
    assert code == 0
    assert r["layers"] == [1, 2] and r["n_units"] == 12 and r["n_points"] == 24
    assert len(r["points"]) == 24 and set(r["points"][0]) == {"unit", "layer", "x", "y"}
    assert len(r["explained_variance"]) == 2 and r["description"].startswith("PCA")
    assert {u["label"] for u in r["units"]} == {"a", "b"}
    # independent path: the store's pooled vectors through the pure function
    from backend.store import Store

    with Store(db, read_only=True) as s:
        runs = s.set_runs("p", s.find_model(model)["model_id"])
        x = s.pooled(runs["run_id"].tolist(), "last", [1, 2])
    # independent reference: scikit-learn's PCA fitted on both layers' points at once
    from sklearn.decomposition import PCA

    want = PCA(2).fit_transform(x.reshape(24, -1).astype(np.float64)).reshape(2, 12, 2)
    got = np.array([[p["x"], p["y"]] for p in r["points"]]).reshape(2, 12, 2)
    signs = np.sign((got * want).sum(axis=(0, 1)))  # a component's sign is arbitrary
    np.testing.assert_allclose(got * signs, want, rtol=1e-4, atol=1e-4)
    from sklearn.metrics import silhouette_score

    labels = [u["label"] for u in r["units"]]
    ref = [silhouette_score(x[i], labels, metric="cosine") for i in range(2)]  # model space
    np.testing.assert_allclose(r["silhouette"], ref, atol=1e-3)
    assert [p["unit"] for p in r["points"][:12]] == runs["run_id"].tolist()


def test_token_units_3d_and_prose(model, capsys):
    code, r = run_json(
        capsys,
        "project",
        "--model",
        model,
        "--set",
        "p",
        "--unit",
        "token",
        "--dims",
        "3",
        "--method",
        "aligned",
        "--max-runs",
        "2",
    )
    assert code == 0 and {"x", "y", "z"} <= set(r["points"][0])
    assert all(":" in p["unit"] for p in r["points"])  # run:position
    assert len(r["explained_variance"]) == len(r["layers"])  # per layer for aligned
    assert main(["project", "--model", model, "--set", "p", "--layers", "0,2"]) == 0
    out = capsys.readouterr().out
    assert "12 prompt units x 2 layers = 24 points" in out and "unit\tlayer\tx\ty" in out


def test_bad_layers_is_one_line(model, capsys):
    capsys.readouterr()
    assert main(["project", "--model", model, "--set", "p", "--layers", "9:12"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
