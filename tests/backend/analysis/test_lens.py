import numpy as np
import pytest
import torch

from backend import extract, models
from backend.analysis.lens import logit_lens


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_last_layer_lens_reproduces_the_models_logits(tiny_model_dir, family):
    lm = models.load_model(str(tiny_model_dir(family)), dtype="float32")
    text = "the cat sits on the mat ."
    tk = extract.tokenize(lm.tokenizer, [text])[0]
    run = next(iter(extract.capture(lm, [("r", tk)], extract.CaptureSettings())))[0]
    res = logit_lens(run.hidden.numpy(), lm.final_norm, lm.unembed, k=3)
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([tk.ids])).logits[0]
    probs = torch.softmax(logits, -1)
    top_p, top_i = probs.topk(3, -1)
    np.testing.assert_array_equal(res.top_ids[-1], top_i.numpy())
    np.testing.assert_allclose(res.top_probs[-1], top_p.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.kl_to_final[-1], 0, atol=1e-6)
    assert (res.final_rank[-1] == 0).all()
    assert res.top_ids.shape == (lm.info.n_layers + 1, len(tk.ids), 3)


def test_commitment_depth_by_hand():
    # a 1-dim "model": identity norm, unembedding [1, -1] -> token 0 iff h > 0
    unembed = torch.nn.Linear(1, 2, bias=False)
    unembed.weight.data = torch.tensor([[1.0], [-1.0]])
    hidden = np.array([[[1.0]], [[-1.0]], [[2.0]], [[3.0]]])  # top: 0, 1, 0, 0
    res = logit_lens(hidden, torch.nn.Identity(), unembed, k=1)
    assert res.commitment.tolist() == [2]
    assert res.final_rank[:, 0].tolist() == [0, 1, 0, 0]
    assert (res.entropy >= 0).all()
