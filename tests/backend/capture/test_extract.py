"""Capture semantics: layer 0 = embeddings, layer n = before the final norm, no padding."""

import numpy as np
import pytest
import torch

from backend import models
from backend.capture import extract

TEXTS = ["the cat sits on the mat .", "a dog runs", "the big red dogs near the cat run ."]


def _capture(lm, texts, max_tokens=None, batch_tokens=8192):
    settings = extract.CaptureSettings(max_tokens=max_tokens, dtype="float32")
    items = [
        (extract.make_run_id(lm.info.model_id, t, settings.key()), tk)
        for t, tk in zip(texts, extract.tokenize(lm.tokenizer, texts, max_tokens))
    ]
    runs = [r for b in extract.capture(lm, items, settings, batch_tokens, exact=True) for r in b]
    for r in runs:  # exact: float32 numpy; compared with torch forward passes below
        assert isinstance(r.hidden, np.ndarray) and r.hidden.dtype == np.float32
        r.hidden = torch.from_numpy(r.hidden)
    return {r.text: r for r in runs}


def test_records_are_numpy_in_storage_precision(tiny_model_dir):
    lm = models.load_model(str(tiny_model_dir("gpt2")), dtype="float32")
    exact = _capture(lm, TEXTS)
    settings = extract.CaptureSettings(dtype="float32")
    items = [(t, tk) for t, tk in zip(TEXTS, extract.tokenize(lm.tokenizer, TEXTS))]
    for r in (r for b in extract.capture(lm, items, settings) for r in b):
        assert r.hidden.dtype == np.float16  # the store keeps these bytes as they are
        want = exact[r.text].hidden.numpy()
        np.testing.assert_array_equal(r.hidden, want.astype(np.float16))


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox", "llama", "qwen2", "mistral"])
def test_final_norm_and_unembed_of_last_layer_reproduce_logits(tiny_model_dir, family):
    lm = models.load_model(str(tiny_model_dir(family)), dtype="float32")
    runs = _capture(lm, TEXTS)
    for text in TEXTS:
        ids = torch.tensor([runs[text].token_ids])
        with torch.inference_mode():
            logits = lm.model(input_ids=ids).logits[0]
            out = lm.model(input_ids=ids, output_hidden_states=True)
            lens = lm.unembed(lm.final_norm(runs[text].hidden[-1]))
        torch.testing.assert_close(lens, logits, atol=1e-4, rtol=1e-4)
        # layer 0 is the embedding output, equal to HF's first hidden state
        torch.testing.assert_close(runs[text].hidden[0], out.hidden_states[0][0])
        # HF's last entry has the final norm applied: we must not equal it (GPT-2, Llama ...)
        assert not torch.allclose(runs[text].hidden[-1], out.hidden_states[-1][0])
        assert runs[text].hidden.shape == (lm.info.n_layers + 1, len(ids[0]), lm.info.d_model)


def test_bert_capture_matches_hidden_states(tiny_model_dir):
    lm = models.load_model(str(tiny_model_dir("bert")), dtype="float32")
    runs = _capture(lm, TEXTS)
    r = runs[TEXTS[0]]
    with torch.inference_mode():
        out = lm.model(input_ids=torch.tensor([r.token_ids]), output_hidden_states=True)
    for layer in range(lm.info.n_layers + 1):  # BERT has no final norm: all entries match
        torch.testing.assert_close(r.hidden[layer], out.hidden_states[layer][0])
    assert r.special[0] and not any(r.special[1:])  # the tiny tokenizer prepends <bos>


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_batching_and_padding_do_not_change_states(tiny_model_dir, family):
    lm = models.load_model(str(tiny_model_dir(family)), dtype="float32")
    together = _capture(lm, TEXTS)
    for t in TEXTS:
        alone = _capture(lm, [t])[t]
        torch.testing.assert_close(together[t].hidden, alone.hidden, atol=1e-5, rtol=1e-4)
        assert together[t].hidden.shape[1] == len(alone.token_ids)  # no padding stored


def test_tokens_offsets_specials_and_truncation(tiny_model_dir):
    lm = models.load_model(str(tiny_model_dir("llama")), dtype="float32")  # prepends <bos>
    r = _capture(lm, [TEXTS[0]])[TEXTS[0]]
    assert r.special[0] and r.tokens[0] == "<bos>" and r.offsets[0] == (-1, -1)
    assert not any(r.special[1:])
    for tok, (s, e) in zip(r.tokens[1:], r.offsets[1:]):
        assert TEXTS[0][s:e] == tok.strip()
    short = _capture(lm, [TEXTS[2]], max_tokens=4)[TEXTS[2]]
    assert short.truncated and short.n_tokens == 4
    assert not r.truncated


def test_plan_batches_respects_token_budget():
    lengths = [5, 200, 17, 17, 64, 1, 90]
    batches = extract.plan_batches(lengths, batch_tokens=200, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3 and len(b) * max(lengths[i] for i in b) <= max(200, lengths[b[0]])


def test_run_id_depends_on_model_text_and_settings():
    a = extract.make_run_id("m1", "hello", {"max_tokens": None})
    assert a == extract.make_run_id("m1", "hello", {"max_tokens": None})
    assert a != extract.make_run_id("m2", "hello", {"max_tokens": None})
    assert a != extract.make_run_id("m1", "hello!", {"max_tokens": None})
    assert a != extract.make_run_id("m1", "hello", {"max_tokens": 3})
    assert a != extract.make_run_id("m1", "hello", {"max_tokens": None}, kind="generation")
    # settings are compared as values, not as the order their keys were written in
    assert extract.make_run_id("m", "t", {"a": 1, "b": 2}) == extract.make_run_id(
        "m", "t", {"b": 2, "a": 1}
    )
    assert len(a) == 24 and int(a, 16) >= 0


def test_an_unknown_word_is_text_not_a_special_token():
    """<unk> has a special id, but it stands for a word of the prompt: it keeps its offsets and
    per-token labels line up with the words (the bundled word-level tokenizer)."""
    from backend import models

    tok = models.load_tokenizer(models.BUNDLED_DIR / "demo")
    t = extract.tokenize(tok, ["the zebra runs"])[0]
    assert tok.convert_ids_to_tokens(t.ids) == ["<bos>", "the", "<unk>", "runs"]
    assert t.special == [True, False, False, False]
    assert t.offsets[2] == (4, 9)


def test_batches_keep_their_states_within_the_budget(tiny_model_dir, monkeypatch):
    """A wide model's batches shrink so one batch's captured states fit STATES_BUDGET; the
    states are the same as with one big batch."""
    lm = models.load_model(str(tiny_model_dir("gpt2")), dtype="float32")
    per_token = (lm.info.n_layers + 1) * lm.info.d_model * 4
    assert extract.budget_tokens(lm, 8192) == min(8192, extract.STATES_BUDGET // per_token)
    assert extract.budget_tokens(lm, 100) == 100  # --batch-tokens stays an upper bound
    gpu = type("LM", (), {"info": lm.info, "device": "cuda"})()
    assert extract.budget_tokens(gpu, 16384, budget=1) == 16384  # device memory: no CPU budget
    big = _capture(lm, TEXTS)
    seen = []
    real_plan = extract.plan_batches
    monkeypatch.setattr(extract, "STATES_BUDGET", per_token * 16)  # 16 tokens per batch
    monkeypatch.setattr(
        extract, "plan_batches", lambda lengths, bt, **kw: seen.append(bt) or real_plan(lengths, bt)
    )
    small = _capture(lm, TEXTS)
    assert seen == [16]
    for t in TEXTS:
        torch.testing.assert_close(small[t].hidden, big[t].hidden, atol=1e-5, rtol=1e-4)
