"""Spliced loss and latent ablation against hand-written hooks on a tiny Llama directory."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from backend.cli import main


@pytest.fixture
def trained(db, tiny_model_dir, tmp_path, capsys):
    model = str(tiny_model_dir("llama"))
    words = ["cat", "dog", "cats", "dogs", "bird", "birds"]
    rows = [
        f"the {words[i % 6]} sees the {words[(i // 6) % 6]},{'a' if i % 2 else 'b'}"
        for i in range(16)
    ]
    f = tmp_path / "p.csv"
    f.write_text("text,label\n" + "\n".join(rows) + "\n")
    argv = ["extract", "--model", model, "--prompts", str(f), "--set", "p"]
    assert main([*argv, "--label-column", "label", "--json"]) == 0
    opts = ["--model", model, "--set", "p", "--layer", "1"]  # default settings
    capsys.readouterr()
    assert main(["features", "train", *opts, "--splice", "--json"]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return model, r


def _encode(w, x):
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    keep = np.argsort(-pre, axis=1)[:, : w["k"]]
    z = np.zeros_like(pre)
    np.put_along_axis(z, keep, np.maximum(np.take_along_axis(pre, keep, 1), 0), 1)
    return z


def _hf_loss(model, ids, block, fn, where):
    """HF's own mean loss (labels=ids) with ``fn`` applied to block's output at ``where``."""

    def hook(_m, _a, out):
        h = out[0] if isinstance(out, tuple) else out
        h = h.clone()
        h[0, where] = torch.as_tensor(np.array(fn(h[0, where].double().numpy())), dtype=h.dtype)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    handle = block.register_forward_hook(hook) if fn is not None else None
    try:
        with torch.no_grad():
            t = torch.tensor([ids])
            return float(model(input_ids=t, labels=t).loss) * (len(ids) - 1)
    finally:
        if handle is not None:
            handle.remove()


def test_spliced_loss_equals_a_hand_written_hook(trained):
    from transformers import AutoModelForCausalLM

    from backend.store import Store
    from backend.views import dictionaries

    model_dir, r = trained
    s = r["splice"]
    with Store() as st:
        d = dictionaries.load(st, r["model_id"], 1, "p", latents=256, k=8, seed=0)
        assert d.info["splice"]["spliced"] == s["spliced"]  # kept in the entry
        w = {n: getattr(d.sae, n).astype(np.float64) for n in dictionaries._WEIGHTS}
        w["k"] = d.sae.k
        # the mean over training tokens, from the cache
        xs = [
            st.rows([rid] * len(t), t["pos"].to_numpy(), 1)[~t["is_special"].to_numpy()]
            for rid in d.info["train_runs"]
            for t in [st.tokens(rid)]
        ]
        mu = np.concatenate(xs).astype(np.float64).mean(0)
        prompts = [st.tokens(rid) for rid in d.info["heldout_runs"]]
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    block = m.model.layers[0]
    sums = np.zeros(3)
    n = 0
    for t in prompts:
        ids = t["token_id"].astype(int).tolist()
        where = np.flatnonzero(~t["is_special"].to_numpy(bool))
        assert len(where) < len(ids)  # BOS kept clean
        sums += [
            _hf_loss(m, ids, block, None, where),
            _hf_loss(m, ids, block, lambda x: _encode(w, x) @ w["W_dec"] + w["b_dec"], where),
            _hf_loss(m, ids, block, lambda x: np.broadcast_to(mu, x.shape), where),
        ]
        n += len(ids) - 1
    clean, spliced, ablated = sums / n
    assert s["n_tokens"] == n
    assert s["clean"] == pytest.approx(clean, abs=1e-4)
    assert s["spliced"] == pytest.approx(spliced, abs=1e-3)
    assert s["mean_ablated"] == pytest.approx(ablated, abs=1e-3)
    rec = (ablated - spliced) / (ablated - clean)
    assert s["loss_recovered"] == pytest.approx(rec, abs=1e-2)


def test_feature_ablation_in_patching_equals_a_hand_written_hook(trained, capsys):
    from transformers import AutoModelForCausalLM

    from backend.store import Store
    from backend.views import dictionaries

    model_dir, r = trained
    clean, corrupted = "the cat sees the dog", "the cats sees the dog"
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with Store() as st:
        d = dictionaries.load(st, r["model_id"], 1, "p", latents=256, k=8, seed=0)
    w = {n: getattr(d.sae, n).astype(np.float64) for n in dictionaries._WEIGHTS}
    w["k"] = d.sae.k
    from tests.conftest import make_tokenizer  # the tiny models' tokenizer, with <bos>

    ids = make_tokenizer(bos=True)(clean)["input_ids"]
    with torch.no_grad():
        h1 = m(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[1][0]
    z = _encode(w, h1.double().numpy())
    f = int(np.argmax(z[1:].max(0)))  # the latent most active on the prompt's words
    assert z[:, f].max() > 0
    tid = {t: make_tokenizer(bos=True).convert_tokens_to_ids(t) for t in ("cat", "dog")}

    def metric(pos):
        def hook(_m, _a, out):
            h = out[0] if isinstance(out, tuple) else out
            h = h.clone()
            x = h[0, pos].double().numpy()
            zf = _encode(w, x[None])[0, f]
            h[0, pos] = torch.as_tensor(x - zf * w["W_dec"][f], dtype=h.dtype)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = m.model.layers[0].register_forward_hook(hook) if pos is not None else None
        try:
            with torch.no_grad():
                lg = m(input_ids=torch.tensor([ids])).logits[0, -1].double()
        finally:
            if handle is not None:
                handle.remove()
        return float(lg[tid["cat"]] - lg[tid["dog"]])

    argv = ["patching", "--model", model_dir, "--clean", clean, "--corrupted", corrupted]
    argv += ["--answer", "cat", "--against", "dog", "--component", "feature", "--feature", str(f)]
    argv += ["--layers", "1", "--set", "p", "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    clean_m = metric(None)
    assert out["clean_metric"] == pytest.approx(clean_m, abs=1e-4)
    ref = [metric(p) - clean_m for p in range(len(ids))]
    np.testing.assert_allclose(out["effect"][0], ref, atol=1e-4)
    assert out["feature"] == f and any(abs(v) > 1e-6 for v in ref)

    argv[argv.index("--feature") + 1] = "999"
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().out


@pytest.mark.slow
def test_the_views_sparse_probe_equals_sklearn_on_the_same_latents(trained, capsys):
    """The browser's sparse probe: latents chosen by roc_auc_score on the dictionary's training
    prompts' last tokens, sklearn's logistic pipeline on the held-out ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from backend.analysis import probes as PR
    from backend.store import Store
    from backend.views import dictionaries

    model_dir, r = trained
    capsys.readouterr()
    argv = ["features", "--model", model_dir, "--set", "p", "--layer", "1", "--probe-k", "3"]
    assert main([*argv, "--json"]) == 0
    sp = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sparse_probe"]
    with Store() as st:
        d = dictionaries.load(st, r["model_id"], 1, "p")
        runs = st.set_runs("p", r["model_id"]).set_index("run_id")

        def last(ids):
            rows = []
            for rid in ids:
                t = st.tokens(rid)
                t = t[~t["is_special"].astype(bool)]
                rows.append(st.rows([rid], t["pos"].to_numpy()[-1:], 1)[0])
            z = _encode({**{n: getattr(d.sae, n) for n in dictionaries._WEIGHTS}, "k": 8},
                        np.stack(rows).astype(np.float64))  # fmt: skip
            return z, runs.loc[ids, "label"].astype(str).to_numpy()

        z_tr, y_tr = last(d.info["train_runs"])
        z_ev, y_ev = last(d.info["heldout_runs"])
    au = np.array([roc_auc_score(y_tr == "b", z_tr[:, j]) for j in range(z_tr.shape[1])])
    au = np.nan_to_num(au, nan=0.5)
    dist = np.abs(au - 0.5)
    assert sorted(dist[sp["latents"]]) == pytest.approx(sorted(dist)[-3:], abs=1e-9)
    y = np.unique(y_ev, return_inverse=True)[1]
    groups = np.arange(len(y))
    splits = PR.grouped_folds(y, groups, sp["folds"], 0)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=1000, tol=1e-8))
    ref = cross_val_score(pipe, z_ev[:, sp["latents"]], y, cv=splits).mean()
    assert sp["accuracy"] == pytest.approx(ref, abs=1e-3)
    assert sp["n_eval_prompts"] == len(y_ev) and 0 <= sp["control"] <= 1


def test_trajectory_units_feature_activation(trained):
    """The Trajectories colouring: each unit's latent activation, as numpy from the weights."""
    from backend.store import Store
    from backend.views import dictionaries
    from backend.views import features as FV

    _, r = trained
    with Store() as st:
        d = dictionaries.load(st, r["model_id"], 1, "p")
        runs = st.set_runs("p", r["model_id"])["run_id"].tolist()[:5]
        meta = pd.DataFrame({"run_id": runs * 2, "pos": [1] * 5 + [3] * 5})
        x = st.rows(meta["run_id"].tolist(), meta["pos"].to_numpy(), 1).astype(np.float64)
        w = {**{n: getattr(d.sae, n).astype(np.float64) for n in dictionaries._WEIGHTS}, "k": 8}
        z = _encode(w, x)
        f = int(np.argmax(z.max(0)))
        got = FV.unit_activations(st, r["model_id"], "p", meta, 1, f)
        np.testing.assert_allclose(got, z[:, f], rtol=1e-4, atol=1e-4)
        with pytest.raises(Exception, match="does not exist"):
            FV.unit_activations(st, r["model_id"], "p", meta, 1, 999)
