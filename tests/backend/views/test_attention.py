"""Attention view on tiny models: weights equal the model's own output_attentions, rows sum
to 1, one pattern per query head under GQA, sink share and entropy checked by hand."""

import json

import numpy as np
import pytest
import torch

from backend.analysis.attention import entropy, sink_share
from backend.cli import main
from backend.views import attention as A

PROMPT = "the cat near the dogs is"


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_weights_are_the_models_own_and_rows_sum_to_one(tiny_model_dir, family):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_dir(family)
    res = A.compute(None, A.Request(model=str(path), prompt=PROMPT))
    ref = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    ids = AutoTokenizer.from_pretrained(path)(PROMPT)["input_ids"]
    with torch.inference_mode():
        want = ref(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    want = np.stack([a[0].numpy() for a in want])
    cfg = AutoConfig.from_pretrained(path)
    heads = cfg.num_attention_heads
    # GQA (llama: 2 key/value heads for 4 query heads): one pattern per query head
    assert res.attention.shape == (cfg.num_hidden_layers, heads, len(ids), len(ids))
    np.testing.assert_allclose(res.attention, want, atol=1e-6)
    np.testing.assert_allclose(res.attention.sum(-1), 1.0, atol=1e-5)
    assert np.triu(res.attention, 1).max() == 0  # causal
    assert res.sink_share.shape == res.entropy.shape == (cfg.num_hidden_layers, heads)
    if family == "llama":
        assert cfg.num_key_value_heads < heads


def test_sink_share_and_entropy_by_hand():
    att = np.array(
        [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.0],
            [1.0, 0.0, 0.0],
        ]
    )
    assert sink_share(att) == pytest.approx(0.75)  # queries 1 and 2: (0.5 + 1.0) / 2
    assert entropy(att) == pytest.approx(np.log(2) / 2)  # log 2 for query 1, 0 for query 2


def test_cli_json_shape(db, tiny_model_dir, capsys):
    path = str(tiny_model_dir("gpt_neox"))
    capsys.readouterr()
    assert main(["attention", "--model", path, "--prompt", PROMPT, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    n = len(r["tokens"])
    assert np.asarray(r["attention"]).shape == (3, 4, n, n)
    assert np.asarray(r["sink_share"]).shape == np.asarray(r["entropy"]).shape == (3, 4)
    gpt2 = str(tiny_model_dir("gpt2"))  # no <bos>: one word is one token, nothing to attend
    assert main(["attention", "--model", gpt2, "--prompt", "the"]) == 2
    assert capsys.readouterr().err.startswith("error: The prompt has 1 token")
