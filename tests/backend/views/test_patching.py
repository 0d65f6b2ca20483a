"""Activation patching on tiny GPT-2 / Llama / NeoX models, checked against plain forward passes
and a forward hook written here, independently of backend.capture.patching."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from backend import models
from backend.cli import main
from backend.errors import LayerScopeError
from backend.views import patching as V

CLEAN, CORRUPTED = "the cat near the dogs is", "the cats near the dog is"
FAMILIES = ("gpt2", "llama", "gpt_neox")


def _req(path, **kw):
    return V.Request(
        model=str(path), clean=CLEAN, corrupted=CORRUPTED, answer="is", against="are", **kw
    )


def _logits(lm, ids, hook=None):
    """Last-position logits of a plain forward, optionally with one hook registered."""
    handle = hook() if hook else None
    try:
        with torch.inference_mode():
            return lm.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    finally:
        if handle is not None:
            handle.remove()


def _diff(lm, logits):
    tok = lm.tokenizer
    a, b = tok.convert_tokens_to_ids("is"), tok.convert_tokens_to_ids("are")
    return float(logits[a] - logits[b])


@pytest.mark.parametrize("family", FAMILIES)
def test_plain_runs_and_the_last_layer_reproduce_clean_and_corrupted(store, tiny_model_dir, family):
    path = tiny_model_dir(family)
    lm = models.load_model(str(path))
    res = V.compute(store, _req(path), lm=lm)
    ids_clean = lm.tokenizer(CLEAN)["input_ids"]
    ids_corr = lm.tokenizer(CORRUPTED)["input_ids"]
    # patching nothing = the corrupted run; the clean metric = a plain clean forward
    assert res.corrupted_metric == pytest.approx(_diff(lm, _logits(lm, ids_corr)), abs=1e-5)
    assert res.clean_metric == pytest.approx(_diff(lm, _logits(lm, ids_clean)), abs=1e-5)
    assert res.clean_source == "computed"
    rec = res.recovery
    n_layers, n_tok = lm.info.n_layers, len(ids_clean)
    assert rec.shape == (n_layers + 1, n_tok) and res.layers == list(range(n_layers + 1))
    # at the last layer only the last position feeds the readout: patching every position
    # there is patching the last one, which gives back the clean metric exactly
    assert rec[-1, -1] == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(rec[-1, :-1], 0.0, atol=1e-4)
    # positions where both prompts hold the same token, at layer 0: identical states
    same = [p for p in range(n_tok) if ids_clean[p] == ids_corr[p]]
    np.testing.assert_allclose(rec[0, same], 0.0, atol=1e-5)
    # each cell's top tokens are a distribution
    assert (np.diff(res.top_probs, axis=-1) <= 1e-6).all() and (res.top_probs <= 1).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_one_cell_equals_a_hand_written_hook(store, tiny_model_dir, family):
    path = tiny_model_dir(family)
    lm = models.load_model(str(path))
    ids_clean = lm.tokenizer(CLEAN)["input_ids"]
    ids_corr = lm.tokenizer(CORRUPTED)["input_ids"]
    subject = next(p for p in range(len(ids_clean)) if ids_clean[p] != ids_corr[p])
    with torch.inference_mode():
        hs = lm.model(input_ids=torch.tensor([ids_clean]), output_hidden_states=True).hidden_states
    blocks = lm.blocks
    res = V.compute(store, _req(path), lm=lm)

    def at_input_of_block0():
        def pre(_m, args, kwargs):
            h = (args[0] if args else kwargs["hidden_states"]).clone()
            h[0, subject] = hs[0][0, subject]
            if args:
                return (h, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": h}

        return blocks[0].register_forward_pre_hook(pre, with_kwargs=True)

    def at_output_of_block(layer):
        def hook():
            def post(_m, _a, out):
                h = (out[0] if isinstance(out, tuple) else out).clone()
                h[0, subject] = hs[layer][0, subject]  # hidden_states[L] = output of block L
                return (h, *out[1:]) if isinstance(out, tuple) else h

            return blocks[layer - 1].register_forward_hook(post)

        return hook

    want0 = _diff(lm, _logits(lm, ids_corr, at_input_of_block0))
    assert res.patched[0, subject] == pytest.approx(want0, abs=1e-4)
    for layer in (1, 2):  # hidden_states[n_layers] has the final norm applied: not used here
        want = _diff(lm, _logits(lm, ids_corr, at_output_of_block(layer)))
        assert res.patched[layer, subject] == pytest.approx(want, abs=1e-4)
        want_last = _diff(lm, _logits(lm, ids_corr, _hook_last(blocks, hs, layer)))
        assert res.patched[layer, -1] == pytest.approx(want_last, abs=1e-4)


def _hook_last(blocks, hs, layer):
    def hook():
        def post(_m, _a, out):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h[0, -1] = hs[layer][0, -1]
            return (h, *out[1:]) if isinstance(out, tuple) else h

        return blocks[layer - 1].register_forward_hook(post)

    return hook


@pytest.mark.parametrize("family", FAMILIES)
def test_skipping_blocks_and_batching_change_nothing(tiny_model_dir, family):
    from backend.capture import patching as P

    lm = models.load_model(str(tiny_model_dir(family)))
    ids_clean = lm.tokenizer(CLEAN)["input_ids"]
    ids_corr = lm.tokenizer(CORRUPTED)["input_ids"]
    clean, _, _ = P.run_plain(lm, ids_clean)
    _, outs, _ = P.run_plain(lm, ids_corr)
    cells = [(layer, p) for layer in range(lm.info.n_layers + 1) for p in range(len(ids_clean))]
    a, b = 5, 6
    skip = P.patch_cells(lm, ids_corr, clean, cells, a, b, corrupted_outputs=outs)
    small = P.patch_cells(lm, ids_corr, clean, cells, a, b, budget=1)  # one row per pass
    np.testing.assert_allclose(skip.metric, small.metric, atol=1e-4)
    assert (skip.top_ids[:, 0] == small.top_ids[:, 0]).all()


def test_results_are_cached_and_clean_states_come_from_the_store(db, tiny_model_dir, tmp_path):
    from backend.store import Store

    path = tiny_model_dir("gpt2")
    with Store(str(db)) as s:
        fresh = V.compute(s, _req(path))
        again = V.compute(s, _req(path))
        assert again.from_cache and not fresh.from_cache
        np.testing.assert_array_equal(again.recovery, fresh.recovery)
        assert again.top_tokens == fresh.top_tokens
        assert V.cached(s, _req(path, top_k=3)) is None  # every input is in the key
    prompts = tmp_path / "p.txt"
    prompts.write_text(CLEAN + "\n")
    assert main(["extract", "--model", str(path), "--prompts", str(prompts), "--set", "c"]) == 0
    with Store(str(db)) as s:
        stored = V.compute(s, _req(path), use_cache=False)
    # the clean reference is a forward pass in the model's precision whether or not the
    # prompt is extracted: the same recovery before and after (not the store's fp16 copy)
    assert stored.clean_source == "computed"
    assert stored.clean_metric == fresh.clean_metric
    np.testing.assert_allclose(stored.recovery, fresh.recovery, rtol=0, atol=1e-9)


def test_prompts_of_different_lengths_are_one_sentence(store, tiny_model_dir):
    path = tiny_model_dir("gpt2")
    with pytest.raises(LayerScopeError) as e:
        V.compute(
            store,
            V.Request(
                model=str(path), clean="the cat near the dogs", corrupted="the cats near dogs"
            ),
        )
    msg = str(e.value)
    assert "5 tokens" in msg and "4" in msg and "\n" not in msg
    with pytest.raises(LayerScopeError, match="same"):  # same top-1 and nothing named
        V.compute(store, V.Request(model=str(path), clean=CLEAN, corrupted=CLEAN))
    with pytest.raises(LayerScopeError, match="not one token"):
        V.compute(
            store, V.Request(model=str(path), clean=CLEAN, corrupted=CORRUPTED, answer="is are")
        )
    with pytest.raises(LayerScopeError, match="Layer 9"):
        V.compute(store, _req(path, layers=(9,)))


def test_cli_json_has_the_documented_keys(db, tiny_model_dir, capsys):
    path = str(tiny_model_dir("llama"))
    argv = ["patch", "--model", path, "--clean", CLEAN, "--corrupted", CORRUPTED]
    capsys.readouterr()
    assert main([*argv, "--answer", "is", "--against", "are", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("layers", "tokens", "recovery", "clean_metric", "corrupted_metric", "top_tokens"):
        assert key in r
    assert len(r["recovery"]) == len(r["layers"]) == 4
    assert len(r["recovery"][0]) == len(r["tokens"])
    assert r["answer"] == "is" and r["against"] == "are"
    assert main([*argv, "--answer", "is", "--against", "are"]) == 0  # prose
    assert "recovery" in capsys.readouterr().out
    assert main(["patching", "--model", path, "--clean", CLEAN, "--corrupted", "the cat"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1


# -- metrics, components, pairs, one cell's distribution --------------------------------------
PAIRS = [
    (CLEAN, CORRUPTED),
    ("the dog near the cats is", "the dogs near the cat is"),
    ("a cat near a dogs is", "a cats near a dog is"),
    ("the big cat near the dogs is", "the big cats near the dog is"),  # 7 tokens: not aligned
]


def _component_hook(blocks, component, layer, pos, value):
    """A hand-written forward hook on block ``layer``'s attention / MLP module."""
    names = {"attn": ("attn", "self_attn", "attention"), "mlp": ("mlp",)}[component]
    block = blocks[layer - 1]
    mod = next(getattr(block, n) for n in names if isinstance(getattr(block, n, None), nn.Module))

    def hook():
        def post(_m, _a, out):
            h = (out[0] if isinstance(out, tuple) else out).clone()
            h[0, pos] = value
            return (h, *out[1:]) if isinstance(out, tuple) else h

        return mod.register_forward_hook(post)

    return hook, mod


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("component", ["attn", "mlp"])
def test_component_patching_equals_a_hand_written_hook(store, tiny_model_dir, family, component):
    path = tiny_model_dir(family)
    lm = models.load_model(str(path))
    ids_clean = lm.tokenizer(CLEAN)["input_ids"]
    ids_corr = lm.tokenizer(CORRUPTED)["input_ids"]
    subject = next(p for p in range(len(ids_clean)) if ids_clean[p] != ids_corr[p])
    res = V.compute(store, _req(path, component=component), lm=lm)
    assert res.layers == list(range(1, lm.info.n_layers + 1)) and res.component == component
    for layer in (1, lm.info.n_layers):
        # the clean module output, recorded by a hook of our own
        _, mod = _component_hook(lm.blocks, component, layer, 0, None)
        seen = {}

        def record(_m, _a, out, seen=seen):
            seen["o"] = out[0] if isinstance(out, tuple) else out

        h = mod.register_forward_hook(record)
        _logits(lm, ids_clean)
        h.remove()
        for pos in (subject, len(ids_clean) - 1):
            hook, _ = _component_hook(lm.blocks, component, layer, pos, seen["o"][0, pos])
            want = _diff(lm, _logits(lm, ids_corr, hook))
            assert res.patched[layer - 1, pos] == pytest.approx(want, abs=1e-4)
    with pytest.raises(LayerScopeError, match="Layer 0"):
        V.compute(store, _req(path, component=component, layers=(0,)), lm=lm)


def test_prob_metric_is_the_answer_probability(store, tiny_model_dir):
    path = tiny_model_dir("gpt2")
    lm = models.load_model(str(path))
    res = V.compute(store, _req(path, metric="prob"), lm=lm)
    a = lm.tokenizer.convert_tokens_to_ids("is")
    ids_clean = lm.tokenizer(CLEAN)["input_ids"]
    ids_corr = lm.tokenizer(CORRUPTED)["input_ids"]
    assert res.clean_metric == pytest.approx(float(_logits(lm, ids_clean).softmax(-1)[a]), abs=1e-6)
    assert res.corrupted_metric == pytest.approx(float(_logits(lm, ids_corr).softmax(-1)[a]), 1e-5)
    # the tiny model's p('is') barely moves: compare the patched metric, not the recovery
    assert res.patched[-1, -1] == pytest.approx(res.clean_metric, abs=1e-6)
    assert res.warning and "mean little" in res.warning  # and recovery is ill-conditioned
    logit = V.compute(store, _req(path), lm=lm)
    assert res.to_dict()["metric"] == "prob" and logit.to_dict()["metric"] == "logit-diff"
    assert V.cached(store, _req(path, metric="prob")) is not None  # its own cache entry


def test_pairs_average_the_aligned_pairs_with_an_interval(store, tiny_model_dir, monkeypatch):
    from backend.demo import sets

    monkeypatch.setattr(sets, "load_pairs", lambda name: PAIRS if name == "toy" else [])
    path = tiny_model_dir("gpt2")
    lm = models.load_model(str(path))
    res = V.compute(store, _req(path, set_name="toy", pairs=True), lm=lm)
    assert res.n_pairs == 3 and res.pair_texts == PAIRS[:3]  # the 7-token pair is not aligned
    one = [V.compute(store, V.Request(model=str(path), clean=c, corrupted=x, answer="is", against="are"), lm=lm)
           for c, x in PAIRS[:3]]  # fmt: skip
    np.testing.assert_allclose(res.recovery, np.mean([r.recovery for r in one], 0), atol=1e-9)
    assert res.clean_metric == pytest.approx(np.mean([r.clean_metric for r in one]))
    iv = res.interval()
    assert (iv.lo <= res.recovery + 1e-9).all() and (res.recovery <= iv.hi + 1e-9).all()
    d = res.to_dict()
    assert {"recovery_lo", "recovery_hi", "n_pairs", "interval", "pairs"} <= set(d)
    assert d["n_pairs"] == 3 and np.shape(d["recovery_lo"]) == np.shape(d["recovery"])
    again = V.cached(store, _req(path, set_name="toy", pairs=True))
    np.testing.assert_allclose(again.recovery, res.recovery)
    assert again.interval().description == iv.description
    with pytest.raises(LayerScopeError, match="no minimal pairs"):
        V.compute(store, _req(path, set_name="nope", pairs=True), lm=lm)
    with pytest.raises(LayerScopeError, match="lines up"):
        V.compute(store, V.Request(model=str(path), clean="the cat is", corrupted="the cats is", answer="is",
                                   against="are", set_name="toy", pairs=True), lm=lm)  # fmt: skip


def test_pair_metrics_are_signed_towards_each_pairs_clean_answer(
    store, tiny_model_dir, monkeypatch
):
    """With a fixed answer / against, pairs whose clean prompt prefers ``against`` enter the
    means with their sign turned: the reference is each pair computed alone, oriented by the
    sign of its own clean metric (the tiny model's logit('are') - logit('dogs') has both)."""
    from backend.demo import sets

    monkeypatch.setattr(sets, "load_pairs", lambda name: PAIRS if name == "toy" else [])
    path = tiny_model_dir("gpt2")
    lm = models.load_model(str(path))
    kw = {"answer": "are", "against": "dogs"}
    one = [
        V.compute(store, V.Request(model=str(path), clean=c, corrupted=x, **kw), lm=lm)
        for c, x in PAIRS[:3]
    ]
    signs = [np.sign(r.clean_metric) for r in one]
    assert min(signs) < 0 < max(signs)  # both signs among the pairs
    res = V.compute(store, V.Request(model=str(path), clean=CLEAN, corrupted=CORRUPTED, set_name="toy", pairs=True,
                                     **kw), lm=lm)  # fmt: skip
    assert res.pair_signs == [int(s) for s in signs]
    assert res.clean_metric == pytest.approx(np.mean([abs(r.clean_metric) for r in one]))
    want_corr = np.mean([s * r.corrupted_metric for s, r in zip(signs, one)])
    assert res.corrupted_metric == pytest.approx(want_corr)
    want = np.mean([s * r.patched for s, r in zip(signs, one)], 0)
    np.testing.assert_allclose(res.patched, want, atol=1e-9)
    np.testing.assert_allclose(res.to_frame()["metric"], want.ravel(), atol=1e-9)
    # recovery is normalised per pair: unchanged by the signs
    np.testing.assert_allclose(res.recovery, np.mean([r.recovery for r in one], 0), atol=1e-9)
    d = res.to_dict()
    assert d["pair_signs"] == res.pair_signs and "pair's clean answer" in d["metric_label"]
    again = V.cached(store, V.Request(model=str(path), clean=CLEAN, corrupted=CORRUPTED, set_name="toy", pairs=True,
                                      **kw))  # fmt: skip
    assert again.pair_signs == res.pair_signs and again.clean_metric == res.clean_metric


@pytest.mark.parametrize("component", ["resid", "mlp"])
def test_cell_distribution_is_one_patched_forward(store, tiny_model_dir, component):
    path = tiny_model_dir("llama")
    lm = models.load_model(str(path))
    req = _req(path, component=component)
    res = V.compute(store, req, lm=lm)
    d = V.cell_distribution(store, req, 2, 2, k=4, lm=lm)
    assert len(d.tokens) >= 4 and (np.diff(d.patched) <= 1e-7).all()
    # its top-1 is the grid's top-1 of that cell, with the same probability
    li, pi = res.layers.index(2), res.positions.index(2)
    assert d.tokens[0] == res.top_tokens[li][pi][0]
    assert d.patched[0] == pytest.approx(float(res.top_probs[li, pi, 0]), abs=1e-5)
    ids_clean = lm.tokenizer(CLEAN)["input_ids"]
    clean_p = _logits(lm, ids_clean).softmax(-1)
    tid = lm.tokenizer.convert_tokens_to_ids(d.tokens[0])
    assert d.clean[0] == pytest.approx(float(clean_p[tid]), abs=1e-5)
    assert set(d.to_frame().columns) == {"token", "patched", "clean", "corrupted"}


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_no_op_cells_skip_their_forward_and_change_nothing(tiny_model_dir, family, monkeypatch):
    from backend.capture import patching as P

    lm = models.load_model(str(tiny_model_dir(family)))
    ids_clean = lm.tokenizer(CLEAN)["input_ids"]
    ids_corr = lm.tokenizer(CORRUPTED)["input_ids"]
    clean, _, _ = P.run_plain(lm, ids_clean)
    corr, outs, last = P.run_plain(lm, ids_corr)
    cells = [(layer, p) for layer in range(lm.info.n_layers + 1) for p in range(len(ids_clean))]
    full = P.patch_cells(lm, ids_corr, clean, cells, 5, 6, corrupted_outputs=outs)
    rows = []
    real = P._last_logits
    monkeypatch.setattr(P, "_last_logits", lambda lm_, ids: rows.append(len(ids)) or real(lm_, ids))
    fast = P.patch_cells(lm, ids_corr, clean, cells, 5, 6, corrupted_outputs=outs,
                         corrupted_values=corr, corrupted_logits=last)  # fmt: skip
    np.testing.assert_allclose(fast.metric, full.metric, atol=1e-5)
    assert (fast.top_ids == full.top_ids).all()
    first = next(p for p in range(len(ids_clean)) if ids_clean[p] != ids_corr[p])
    same = [(la, p) for la, p in cells if p < first or (la == 0 and ids_clean[p] == ids_corr[p])]
    assert sum(rows) == len(cells) - len(same)  # positions before the first difference: no pass


def test_a_small_clean_corrupted_gap_is_warned_about(store, tiny_model_dir):
    """The threshold against the clean logits' spread computed here with a plain forward:
    the tiny model's is/are gap is far below 5% of it; a demo pair's is far above."""
    path = tiny_model_dir("gpt2")
    lm = models.load_model(str(path))
    res = V.compute(store, _req(path), lm=lm)
    ids_clean = lm.tokenizer(CLEAN)["input_ids"]
    sd = float(_logits(lm, ids_clean).std())
    gap = abs(res.clean_metric - res.corrupted_metric)
    assert gap < max(0.05 * sd, 0.05) and res.small_gap == max(0.05 * sd, 0.05)
    assert "mean little" in res.warning and res.to_dict()["warning"] == res.warning
    assert V.cached(store, _req(path)).warning == res.warning
    if "demo" in models.bundled_models():
        demo = V.compute(store, V.Request(model="demo", clean="the cat near the dogs often",
                                          corrupted="the cats near the dog often", layers=(0,)))  # fmt: skip
        assert demo.warning is None and "warning" not in demo.to_dict()
