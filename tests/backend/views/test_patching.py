"""Activation patching on tiny GPT-2 / Llama / NeoX models, checked against plain forward passes
and a forward hook written here, independently of backend.capture.patching."""

import json

import numpy as np
import pytest
import torch

from backend import models
from backend.cli import main
from backend.errors import LayerScopeError
from backend.views import patching as V

CLEAN, CORRUPTED = "the cat near the dogs is", "the cats near the dog is"
FAMILIES = ("gpt2", "llama", "gpt_neox")


def _req(path, **kw):
    return V.Request(str(path), CLEAN, CORRUPTED, answer="is", against="are", **kw)


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
    assert stored.clean_source == "cache (fp16)"
    np.testing.assert_allclose(stored.recovery, fresh.recovery, atol=2e-2)


def test_prompts_of_different_lengths_are_one_sentence(store, tiny_model_dir):
    path = tiny_model_dir("gpt2")
    with pytest.raises(LayerScopeError) as e:
        V.compute(store, V.Request(str(path), "the cat near the dogs", "the cats near dogs"))
    msg = str(e.value)
    assert "5 tokens" in msg and "4" in msg and "\n" not in msg
    with pytest.raises(LayerScopeError, match="same"):  # same top-1 and nothing named
        V.compute(store, V.Request(str(path), CLEAN, CLEAN))
    with pytest.raises(LayerScopeError, match="single token"):
        V.compute(store, _req(path).__class__(str(path), CLEAN, CORRUPTED, answer="is are"))
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
