"""Steering on tiny GPT-2 / Llama models, checked against plain greedy decoding and a forward
hook written here, independently of backend.capture.steering."""

import json

import numpy as np
import pytest
import torch

from backend import models
from backend.capture import steering as S
from backend.cli import main
from backend.errors import LayerScopeError
from backend.views import steering as V
from backend.views import steering_runs

PROMPT = "the cat near the dogs"
SET = [
    ("the cat near the dogs", "singular"),
    ("the cats near the dog", "plural"),
    ("the dog", "singular"),
    ("the dogs", "plural"),
]


def _greedy(lm, text, n):
    """Plain greedy decoding without any cache or hook: argmax, append, run again."""
    ids = lm.tokenizer(text)["input_ids"]
    out = []
    with torch.inference_mode():
        for _ in range(n):
            nxt = int(lm.model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            out.append(nxt)
            if nxt == lm.tokenizer.eos_token_id:
                break
    return out


@pytest.mark.parametrize("family", ("gpt2", "llama"))
def test_alpha_zero_is_plain_greedy_decoding(tiny_model_dir, family):
    lm = models.load_model(str(tiny_model_dir(family)))
    d = lm.info.d_model
    u = torch.randn(d, generator=torch.Generator().manual_seed(0))
    got = S.steer_generate(lm, PROMPT, 1, S.unit(u), [0.0, 3.0], max_new_tokens=6)
    assert got.new_ids[0] == _greedy(lm, PROMPT, 6)


@pytest.mark.parametrize("family", ("gpt2", "llama"))
@pytest.mark.parametrize("layer", (0, 2))
def test_the_hook_adds_alpha_unit_typical_norm(tiny_model_dir, family, layer):
    lm = models.load_model(str(tiny_model_dir(family)))
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    with torch.inference_mode():
        plain = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    d = lm.info.d_model
    u = S.unit(torch.randn(d, generator=torch.Generator().manual_seed(1)))
    alpha = 2.5
    # the typical norm, by hand: median L2 norm of the unsteered states over the prompt
    seen = {}

    def grab(_m, args, kwargs=None):
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    blocks = lm.blocks
    with torch.inference_mode():
        if layer == 0:
            h0 = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
        else:
            h0 = blocks[layer].register_forward_pre_hook(grab, with_kwargs=True)
        lm.model(input_ids=ids)
        h0.remove()
    norm = float(seen["h"][0].norm(dim=-1).median())
    # layer 0 is the embedding: hidden_states[0] is exactly the input of block 0
    with torch.inference_mode(), S.SteeringHook(lm, layer, u[None], [alpha]) as hook:
        h1 = blocks[layer].register_forward_pre_hook(grab, with_kwargs=True)
        lm.model(input_ids=ids)
        h1.remove()
    assert hook.norm == pytest.approx(norm, rel=1e-6)
    if layer == 0:
        want = plain[0][0] + alpha * u * norm
        np.testing.assert_allclose(seen["h"][0].numpy(), want.numpy(), atol=1e-4)
    # any layer: the difference between steered and unsteered inputs of block `layer`
    with torch.inference_mode():
        h2 = blocks[layer].register_forward_pre_hook(grab, with_kwargs=True)
        lm.model(input_ids=ids)
        h2.remove()
    unsteered = seen["h"].clone()
    with torch.inference_mode(), S.SteeringHook(lm, layer, u[None], [alpha]):
        h3 = blocks[layer].register_forward_pre_hook(grab, with_kwargs=True)
        lm.model(input_ids=ids)
        h3.remove()
    diff = (seen["h"] - unsteered)[0]
    np.testing.assert_allclose(diff.numpy(), (alpha * u * norm).expand_as(diff).numpy(), atol=1e-4)


def test_steering_from_a_position_on_leaves_earlier_positions_alone(tiny_model_dir):
    lm = models.load_model(str(tiny_model_dir("gpt2")))
    ids = torch.tensor([lm.tokenizer(PROMPT)["input_ids"]])
    u = S.unit(torch.ones(lm.info.d_model))
    seen = {}

    def grab(_m, args, kwargs):
        seen["h"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    with torch.inference_mode():
        h = lm.blocks[1].register_forward_pre_hook(grab, with_kwargs=True)
        lm.model(input_ids=ids)
        plain = seen["h"].clone()
        with S.SteeringHook(lm, 1, u[None], [1.0], start=3):
            lm.model(input_ids=ids)
        h.remove()
    diff = (seen["h"] - plain)[0].norm(dim=-1)
    assert (diff[:3] == 0).all() and (diff[3:] > 0).all()


@pytest.fixture
def labelled(db, tiny_model_dir, tmp_path):
    path = tiny_model_dir("gpt2")
    csv = tmp_path / "num.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in SET))
    assert main(["extract", "--model", str(path), "--prompts", str(csv), "--set", "num",
                 "--label-column", "label"]) == 0  # fmt: skip
    return path


def test_means_direction_and_its_random_control(labelled, db):
    from backend.store import Store

    path = labelled
    lm = models.load_model(str(path))
    req = V.Request(model=str(path), set_name="num", layer=2, alphas=(-4, 0, 4), max_new_tokens=3)
    with Store(str(db)) as s:
        res = V.compute(s, req, lm=lm)
        again = V.compute(s, req)
        assert again.from_cache and again.flip_rate == res.flip_rate
        assert V.cached(s, V.Request(model=str(path), set_name="num", layer=1)) is None
        runs = s.set_runs("num", lm.info.model_id)
        x = s.pooled(runs["run_id"].tolist(), "last", [2])[0]
    lab = runs["label"].to_numpy()
    want = x[lab == "singular"].mean(0) - x[lab == "plural"].mean(0)
    assert res.labels == ["plural", "singular"]
    np.testing.assert_allclose(res.direction, want, rtol=1e-5, atol=1e-6)
    # the control has the same norm as the direction, and another direction
    assert np.linalg.norm(res.control) == pytest.approx(np.linalg.norm(res.direction))
    assert abs(np.dot(res.control, res.direction)) < 0.9 * np.linalg.norm(res.direction) ** 2
    # α = 0: no flip, and the continuation is plain greedy decoding
    i0 = res.alphas.index(0.0)
    assert res.flip_rate["direction"][i0] == 0 and res.flip_rate["control"][i0] == 0
    want0 = lm.tokenizer.decode(_greedy(lm, res.prompts[0], 3), skip_special_tokens=True)
    assert res.continuations["direction"][0][i0] == want0
    assert res.continuations["control"][0][i0] == want0
    assert len(res.to_frame()) == 6 and "alpha" in res.continuations_frame()


def test_toward_counts_the_other_classes_answers():
    labels = ["plural", "singular"]
    plabels = ["plural", "plural", "singular", "singular"]
    base = np.array([10, 11, 20, 11])  # 11 starts prompts of both classes: nobody's answer
    assert V.answer_sets(_NoTok(), labels, plabels, base) == [{10}, {20}]
    first = {"direction": [[20], [20], [10], [20]], "control": [[10], [20], [20], [20]]}
    got = V._toward(_NoTok(), labels, plabels, base, first, 1)
    # plural prompts that answer: only #0 (11 is no answer); it now starts with 20
    assert got["direction"] == {"plural": [1.0], "singular": [1.0]}
    assert got["control"] == {"plural": [0.0], "singular": [0.0]}


def test_given_answers_and_the_agreement_sets_verbs():
    assert V.answer_sets(_OneTok(), ["a", "b"], [], [], (("x", "y"), ("z",))) == [
        {ord("x"), ord("y")},
        {ord("z")},
    ]
    known = V.known_answers("agreement", ["plural", "singular"])
    assert "run" in known[0] and "runs" in known[1]
    assert V.known_answers("other", ["plural", "singular"]) is None
    with pytest.raises(LayerScopeError, match="both labels"):
        V.Request(model="m", prompts=("p",), direction="random", answers=(("x",), ()))


class _OneTok:
    def encode(self, s, add_special_tokens=False):
        s = s.strip()
        return [ord(s)] if len(s) == 1 else [1, 2]


class _NoTok:
    def encode(self, s, add_special_tokens=False):
        return [1, 2]  # no label is a single token


def test_sampled_alpha_zero_matches_capture_generate(tiny_model_dir):
    from backend.capture.generate import generate
    from backend.records import Sampling

    lm = models.load_model(str(tiny_model_dir("gpt2")))
    s = Sampling(samples=1, max_new_tokens=5, temperature=1.0, seed=4)
    plain = generate(lm, PROMPT, s)[0]
    n_p = len(lm.tokenizer(PROMPT)["input_ids"])
    got = S.steer_generate(lm, PROMPT, 1, S.unit(torch.ones(lm.info.d_model)), [0.0], 5, s)
    assert got.new_ids[0] == plain.token_ids[n_p:]


def test_bad_layer_and_bad_npy_are_one_sentence(store, tiny_model_dir, tmp_path):
    path = tiny_model_dir("gpt2")
    lm = models.load_model(str(path))
    with pytest.raises(LayerScopeError, match="Layer 9 does not exist") as e:
        V.compute(
            store, V.Request(model=str(path), prompts=(PROMPT,), direction="random", layer=9), lm=lm
        )
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones(lm.info.d_model + 3))
    with pytest.raises(LayerScopeError, match="d_model") as e:
        V.compute(
            store, V.Request(model=str(path), prompts=(PROMPT,), direction=str(bad), layer=1), lm=lm
        )
    assert "\n" not in str(e.value)
    with pytest.raises(LayerScopeError, match="labelled set"):
        V.Request(model=str(path), prompts=(PROMPT,), direction="means")


def test_npy_direction_and_typed_prompts(store, tiny_model_dir, tmp_path):
    path = tiny_model_dir("gpt2")
    lm = models.load_model(str(path))
    v = tmp_path / "v.npy"
    np.save(v, np.arange(lm.info.d_model, dtype=np.float32))
    res = V.compute(
        store, V.Request(model=str(path), prompts=(PROMPT,), direction=str(v), layer=1), lm=lm
    )
    assert res.flip_rate is None
    np.testing.assert_allclose(res.direction, np.arange(lm.info.d_model))
    assert len(res.continuations["direction"][0]) == len(res.alphas)


def test_cli_json_has_the_documented_keys(labelled, capsys):
    path = str(labelled)
    argv = ["steer", "--model", path, "--set", "num", "--layer", "1", "--alphas", "-4,0,4"]
    capsys.readouterr()
    assert main([*argv, "--max-new-tokens", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("layer", "alphas", "flip_rate", "continuations", "direction_norm", "control_norm"):
        assert key in r
    assert set(r["flip_rate"]) == {"direction", "control"}
    assert set(r["toward"]["direction"]) == {"plural", "singular"}
    assert len(r["flip_rate"]["direction"]) == 3 and r["flip_rate"]["direction"][1] == 0
    assert r["direction_norm"] == pytest.approx(r["control_norm"])
    assert main([*argv, "--max-new-tokens", "2"]) == 0  # prose
    assert "flip" in capsys.readouterr().out
    assert main(["steering", "--model", path, "--prompt", "a b", "--layer", "7",
                 "--direction", "random"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1


def test_probe_direction_is_a_ridge_probes_weights_pointing_to_the_second_label(labelled, db):
    from sklearn.linear_model import RidgeClassifier
    from sklearn.preprocessing import StandardScaler

    from backend.store import Store

    path = labelled
    lm = models.load_model(str(path))
    req = V.Request(model=str(path), set_name="num", layer=2, direction="probe", alphas=(0, 4),
                    max_new_tokens=2)  # fmt: skip
    with Store(str(db)) as s:
        res = V.compute(s, req, lm=lm)
        runs = s.set_runs("num", lm.info.model_id)
        x = s.pooled(runs["run_id"].tolist(), "last", [2])[0].astype(np.float64)
    y = (runs["label"].to_numpy() == "singular").astype(int)
    sc = StandardScaler().fit(x)
    ref = RidgeClassifier(alpha=10.0).fit(sc.transform(x), y).decision_function(sc.transform(x))
    w = np.asarray(res.direction)
    ours = (x - x.mean(0)) @ w  # the probe's decision values, up to its bias
    np.testing.assert_allclose(ours, ref - ref.mean(), atol=0.02 * np.abs(ref).max())
    assert (x[y == 1] @ w).mean() > (x[y == 0] @ w).mean()  # towards 'singular'
    assert res.to_dict()["direction_kind"] == "probe"
    with pytest.raises(LayerScopeError, match="needs a labelled set"):
        V.Request(model=str(path), prompts=("the cat",), direction="probe")


def test_steered_runs_are_stored_as_runs_and_alpha_zero_is_plain(labelled, db):
    from backend.capture import patching as P
    from backend.store import Store

    path = labelled
    lm = models.load_model(str(path))
    req = V.Request(model=str(path), set_name="num", layer=2, alphas=(0, 6), max_new_tokens=3)
    with Store(str(db)) as s:
        names = steering_runs.store_runs(s, req, lm=lm)
        assert names == {0.0: "num+steer(L2 means 0)", 6.0: "num+steer(L2 means 6)"}
        n_runs = len(s.runs_for_model(lm.info.model_id))
        assert steering_runs.store_runs(s, req, lm=lm) == names  # the same runs: a cache hit
        assert len(s.runs_for_model(lm.info.model_id)) == n_runs
        plain, steered = (
            s.set_runs(names[0.0], lm.info.model_id),
            s.set_runs(names[6.0], lm.info.model_id),
        )
        assert len(plain) == len(steered) == len(SET)
        assert list(plain["label"]) == [lab for _, lab in SET]
        res = V.compute(s, req, lm=lm)
        for i, r in enumerate(plain.itertuples()):
            assert r.text == SET[i][0] + res.continuations["direction"][i][0]
            ids = s.tokens(r.run_id)["token_id"].tolist()
            want, _, _ = P.run_plain(lm, ids)  # α = 0: the plain forward of the same tokens
            np.testing.assert_allclose(s.run_layers(r.run_id), want.numpy(), atol=2e-2)
            info = s.get_run(r.run_id)
            assert info["kind"] == "prompt" and info["settings"]["steer"]["alpha"] == 0.0
        # α = 6: layers below the steered one are the plain prompt's, the steered one is not
        r0, r6 = plain["run_id"][0], steered["run_id"][0]
        n_p = len(lm.tokenizer(SET[0][0])["input_ids"])
        a, b = s.run_layers(r0)[:, :n_p], s.run_layers(r6)[:, :n_p]
        np.testing.assert_allclose(a[:2], b[:2], atol=1e-3)
        assert np.abs(a[2] - b[2]).max() > 0.1
