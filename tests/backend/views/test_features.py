"""Features on the bundled demo as ground truth, and the dictionaries' store / SAELens round
trips on a tiny Llama-architecture model directory."""

import json

import numpy as np
import pandas as pd
import pytest

from backend.cli import main
from backend.errors import LayerScopeError


def run_json(capsys, *argv):
    capsys.readouterr()
    code = main([*argv, "--json"])
    out = capsys.readouterr()
    return code, json.loads(out.out.strip().splitlines()[-1])


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Plain pairwise AUROC (ties count half)."""
    pos, neg = score[positive], score[~positive]
    return float(((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])).mean())


@pytest.mark.slow
def test_demo_layer_2_dictionary_is_good_and_a_latent_tracks_subject_number(db, capsys, tmp_path):
    """The issue's done-when: agreement, layer 2, 256 latents, k = 8."""
    from safetensors.numpy import load_file

    assert main(["extract", "--model", "demo", "--set", "agreement", "--json"]) == 0
    opts = ["--model", "demo", "--set", "agreement", "--layer", "2"]
    code, r = run_json(capsys, "features", "train", *opts, "--latents", "256", "--k", "8")
    assert code == 0, r
    assert r["fvu"] <= 0.25 and r["l0"] <= 8 and 0 <= r["dead_fraction"] < 1
    assert r["hook_name"] == "blocks.1.hook_resid_post"

    out = tmp_path / "sae"
    code, e = run_json(capsys, "features", "export", *opts, "--out", str(out))
    assert code == 0, e
    cfg = json.loads((out / "cfg.json").read_text())
    assert (cfg["architecture"], cfg["d_in"], cfg["d_sae"], cfg["k"]) == ("topk", 128, 256, 8)
    w = load_file(str(out / "sae_weights.safetensors"))
    assert w["W_enc"].shape == (128, 256) and w["W_dec"].shape == (256, 128)

    # plain numpy from the exported weights and `export --layer 2` activations
    acts = tmp_path / "acts.parquet"
    assert (
        main(
            ["export", "--model", "demo", "--set", "agreement", "--layer", "2", "--out", str(acts)]
        )
        == 0
    )
    df = pd.read_parquet(acts)
    df = df[df["token"] != "<bos>"]
    x = np.stack(df["vector"].to_numpy()).astype(np.float64)

    def encode(v):
        pre = (v - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        keep = np.argsort(-pre, axis=1)[:, : cfg["k"]]
        z = np.zeros_like(pre)
        np.put_along_axis(z, keep, np.maximum(np.take_along_axis(pre, keep, 1), 0), 1)
        return z

    held = df["run_id"].isin(cfg["layerscope"]["heldout_runs"]).to_numpy()
    xh = x[held]
    rec = encode(xh) @ w["W_dec"] + w["b_dec"]
    fvu = ((xh - rec) ** 2).sum() / ((xh - xh.mean(0)) ** 2).sum()
    assert fvu == pytest.approx(r["fvu"], abs=0.05)
    assert (encode(xh) > 0).sum(1).mean() == pytest.approx(r["l0"], abs=1e-6)

    # the browser finds the latent (highest AUROC); numpy on the last tokens confirms it
    code, b = run_json(capsys, "features", *opts, "--sort", "auroc")
    assert code == 0, b
    best = b["feature"]["id"]
    assert best == b["latents"][0]["latent"] and b["latents"][0]["auroc"] >= 0.9
    last = df.loc[df.groupby("run_id")["pos"].idxmax()]
    z = encode(np.stack(last["vector"].to_numpy()).astype(np.float64))[:, best]
    label = b["latents"][0]["auroc_label"]
    assert _auroc(z, (last["label"] == label).to_numpy()) >= 0.9
    v, lo, hi = b["feature"]["auroc"][label]
    assert v >= 0.9 and lo <= v <= hi
    assert b["feature"]["contexts"] and b["feature"]["contexts"][0]["activation"] > 0
    sp = b["sparse_probe"]  # k latents chosen on training prompts, probed on held-out ones
    assert sp["accuracy"] >= 0.9 and sp["control"] < 0.75 and best in sp["latents"]


@pytest.fixture
def llama_set(db, tiny_model_dir, tmp_path):
    model = str(tiny_model_dir("llama"))
    words = ["cat", "dog", "cats", "dogs", "bird", "birds"]
    rows = [
        f"the {words[i % 6]} sees the {words[(i // 6) % 6]},{'a' if i % 2 else 'b'}"
        for i in range(24)
    ]
    f = tmp_path / "p.csv"
    f.write_text("text,label\n" + "\n".join(rows) + "\n")
    argv = ["extract", "--model", model, "--prompts", str(f), "--set", "p"]
    assert main([*argv, "--label-column", "label", "--json"]) == 0
    return model


@pytest.mark.slow
def test_train_export_import_browse_on_a_llama_dir(llama_set, capsys, tmp_path):
    from backend.store import Store
    from backend.views import dictionaries

    opts = ["--model", llama_set, "--set", "p", "--layer", "1", "--latents", "16", "--k", "2"]
    code, r = run_json(capsys, "features", "train", *opts)
    assert code == 0, r
    assert r["l0"] <= 2 and np.isfinite(r["fvu"]) and r["n_heldout_tokens"] > 0
    with Store() as s:  # reopening reads it back (the same weights)
        d = dictionaries.load(s, r["model_id"], 1, "p", latents=16, k=2, seed=0)
        assert d is not None and d.info["fvu"] == r["fvu"] and d.sae.d_sae == 16
        assert set(d.info["train_runs"]).isdisjoint(d.info["heldout_runs"])
    code, b = run_json(capsys, "features", *opts, "--feature", "3", "--logit-effects")
    assert code == 0, b
    assert b["feature"]["id"] == 3 and len(b["latents"]) == 16
    assert b["feature"]["logit_effects"]["method"].startswith("direct-path approximation")

    out = tmp_path / "sae"
    assert run_json(capsys, "features", "export", *opts, "--out", str(out))[0] == 0
    code, i = run_json(
        capsys, "features", "import", "--model", llama_set, "--layer", "1", "--from", str(out)
    )
    assert code == 0, i
    with Store() as s:
        imp = dictionaries.load(s, r["model_id"], 1, None)
        np.testing.assert_array_equal(imp.sae.W_enc, d.sae.W_enc)
    code, b2 = run_json(capsys, "features", *opts, "--imported", "--feature", "3")
    assert code == 0 and b2["feature"]["density"] == b["feature"]["density"]

    # browsing reads the cache without torch (the read path of every view)
    import os
    import subprocess
    import sys

    from tests.backend.test_no_torch_on_read import HEAVY, WRAPPER
    from tests.conftest import ROOT

    argv = [["features", *opts, "--db", os.environ["LAYERSCOPE_DB"], "--json"]]
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, json.dumps(argv), ",".join(HEAVY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("@@")][-1][2:])
    assert report == {"codes": [0], "heavy": []}, proc.stderr[-2000:]

    # steering along a feature: its (unit-norm) decoder row, next to the random control
    steer = ["steering", "--model", llama_set, "--set", "p", "--layer", "1", "--max-prompts", "2"]
    steer += ["--max-new-tokens", "2", "--alphas", "0,4", "--labels", "a,b"]
    code, st = run_json(capsys, *steer, "--direction", "feature:3")
    assert code == 0, st
    assert st["direction_kind"] == "feature:3" and st["direction_norm"] == pytest.approx(
        1, abs=1e-5
    )
    code, e = run_json(capsys, *steer, "--direction", "feature:99")
    assert code == 2 and "does not exist" in e["error"]

    # wrong layer (the cfg's hook), wrong width, malformed files: one message each
    code, e = run_json(
        capsys, "features", "import", "--model", llama_set, "--layer", "2", "--from", str(out)
    )
    assert code == 2 and "blocks.0.hook_resid_post" in e["error"]
    cfg = json.loads((out / "cfg.json").read_text())
    from safetensors.numpy import load_file, save_file

    w = load_file(str(out / "sae_weights.safetensors"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "cfg.json").write_text(json.dumps(cfg))
    save_file({**w, "W_dec": w["W_dec"][:, :-1].copy()}, str(bad / "sae_weights.safetensors"))
    code, e = run_json(
        capsys, "features", "import", "--model", llama_set, "--layer", "1", "--from", str(bad)
    )
    assert code == 2 and "W_dec has shape" in e["error"]
    (bad / "sae_weights.safetensors").write_bytes(b"not a safetensors file")
    code, e = run_json(
        capsys, "features", "import", "--model", llama_set, "--layer", "1", "--from", str(bad)
    )
    assert code == 2 and "cannot be read" in e["error"]
    (bad / "cfg.json").write_text("{")
    code, e = run_json(
        capsys, "features", "import", "--model", llama_set, "--layer", "1", "--from", str(bad)
    )
    assert code == 2 and "not valid JSON" in e["error"]


def test_browsing_before_training_says_what_to_do(llama_set, capsys):
    code, e = run_json(capsys, "features", "--model", llama_set, "--set", "p", "--layer", "1")
    assert code == 2 and "train one first" in e["error"]


def test_request_validation():
    from backend.views.features import Request

    with pytest.raises(LayerScopeError, match="Unknown sort"):
        Request(model_id="m", set_name="s", layer=1, sort="size")
    with pytest.raises(LayerScopeError, match="k must"):
        Request(model_id="m", set_name="s", layer=1, latents=4, k=5)


def test_auroc_matrix_equals_pairwise_counting():
    from backend.views.features import auroc_matrix

    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=(40, 3)), 1)  # ties on purpose
    y = rng.random(40) > 0.5
    ref = [_auroc(a[:, j], y) for j in range(3)]
    np.testing.assert_allclose(auroc_matrix(a, y), ref)
