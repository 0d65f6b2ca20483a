import numpy as np
import pytest
import torch

from backend import models
from backend.analysis import lens as LE
from backend.capture import extract


def _hooked_gpt2(seed=0):
    """A tiny GPT-2 built from its config, with its residual stream read by forward hooks on
    transformer.h[i] (independent of backend.capture.extract): layer 0 = input of block 0."""
    import transformers as tf

    torch.manual_seed(seed)
    cfg = tf.GPT2Config(vocab_size=61, n_embd=24, n_layer=3, n_head=4, n_positions=32)
    model = tf.GPT2LMHeadModel(cfg).eval()
    assert model.transformer.h[0].attn.c_attn.weight.shape == (24, 72)  # config took effect
    return model


def _hidden_by_hooks(model, ids):
    states = []
    blocks = model.transformer.h
    hooks = [
        blocks[0].register_forward_pre_hook(
            lambda m, a, kw: states.append(
                (a[0] if a else kw["hidden_states"])[0].detach().clone()
            ),
            with_kwargs=True,
        )
    ]
    hooks += [
        b.register_forward_hook(
            lambda m, a, out: states.append(
                (out[0] if isinstance(out, tuple) else out)[0].detach().clone()
            )
        )
        for b in blocks
    ]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    for h in hooks:
        h.remove()
    return torch.stack(states).numpy(), logits


@pytest.mark.slow
def test_last_layer_lens_reproduces_gpt2_logits_from_hooks():
    model = _hooked_gpt2()
    ids = [5, 17, 3, 40, 22, 9, 60, 1]
    hidden, logits = _hidden_by_hooks(model, ids)
    assert hidden.shape == (4, len(ids), 24)
    res = LE.logit_lens(hidden, model.transformer.ln_f, model.lm_head, k=4, chunk_bytes=1)
    probs = torch.softmax(logits, -1)
    top_p, top_i = probs.topk(4, -1)
    np.testing.assert_array_equal(res.top_ids[-1], top_i.numpy())
    np.testing.assert_allclose(res.top_probs[-1], top_p.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.kl_to_final[-1], 0, atol=1e-5)
    assert (res.final_rank[-1] == 0).all()
    # every layer, against a direct softmax of the readout (no chunking tricks)
    direct = torch.log_softmax(model.lm_head(model.transformer.ln_f(torch.tensor(hidden))), -1)
    p = direct.exp()
    np.testing.assert_allclose(res.entropy, -(p * direct).sum(-1).detach(), atol=1e-4)
    kl = (p[-1] * (direct[-1] - direct)).sum(-1).detach()
    np.testing.assert_allclose(res.kl_to_final, kl, atol=1e-4)
    assert res.layers == (0, 1, 2, 3) and res.commitment.shape == (len(ids),)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_lens_on_captured_runs_reproduces_the_models_logits(tiny_model_dir, family):
    lm = models.load_model(str(tiny_model_dir(family)), dtype="float32")
    tk = extract.tokenize(lm.tokenizer, ["the cat sits on the mat ."])[0]
    run = next(iter(extract.capture(lm, [("r", tk)], extract.CaptureSettings(), exact=True)))[0]
    res = LE.logit_lens(run.hidden, lm.final_norm, lm.unembed, k=3)
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([tk.ids])).logits[0]
    top_p, top_i = torch.softmax(logits, -1).topk(3, -1)
    np.testing.assert_array_equal(res.top_ids[-1], top_i.numpy())
    np.testing.assert_allclose(res.top_probs[-1], top_p.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.kl_to_final[-1], 0, atol=1e-6)
    assert res.top_ids.shape == (lm.info.n_layers + 1, len(tk.ids), 3)


def _one_dim():
    # a 1-dim "model": identity norm, unembedding [1, -1] -> token 0 iff h > 0
    unembed = torch.nn.Linear(1, 2, bias=False)
    unembed.weight.data = torch.tensor([[1.0], [-1.0]])
    return torch.nn.Identity(), unembed


def test_commitment_rank_entropy_and_kl_by_hand():
    norm, unembed = _one_dim()
    hidden = np.array([[[1.0]], [[-1.0]], [[2.0]], [[3.0]]])  # top: 0, 1, 0, 0
    res = LE.logit_lens(hidden, norm, unembed, k=1)
    assert res.commitment.tolist() == [2]
    assert res.final_rank[:, 0].tolist() == [0, 1, 0, 0]
    # layer 1: logits (-1, 1) -> p = (s(-2), s(2)); final: p = (s(6), s(-6))
    s = lambda v: 1 / (1 + np.exp(-v))
    q, f = np.array([s(-2), s(2)]), np.array([s(6), s(-6)])
    assert res.entropy[1, 0] == pytest.approx(-(q * np.log(q)).sum(), abs=1e-6)
    assert res.kl_to_final[1, 0] == pytest.approx((f * np.log(f / q)).sum(), abs=1e-6)
    assert res.kl_to_final[3, 0] == pytest.approx(0, abs=1e-7)


def test_commitment_depth_rules():
    is_top = np.array([[1, 0, 1], [0, 0, 1], [1, 1, 1]], bool)
    assert LE.commitment_depth(is_top).tolist() == [2, 2, 0]
    res = LE.logit_lens(
        np.zeros((3, 2, 1)) + [[[1.0]], [[-1.0]], [[1.0]]], *_one_dim(), k=1, layers=(4, 5, 6)
    )
    assert res.commitment.tolist() == [6, 6]


def test_summary_across_prompts():
    norm, unembed = _one_dim()
    a = LE.logit_lens(np.array([[[1.0], [-1.0]], [[2.0], [1.0]]]), norm, unembed, k=1)
    b = LE.logit_lens(np.array([[[-1.0]], [[1.0]]]), norm, unembed, k=1)
    s = LE.summarize([a, b])
    assert s.n_positions == 3 and s.agreement.tolist() == pytest.approx([1 / 3, 1])
    assert s.commitment_counts.tolist() == [1, 2]
    last = LE.summarize([a, b], positions="last")
    assert last.n_positions == 2 and last.agreement.tolist() == [0, 1]
    np.testing.assert_allclose(s.kl_mean, np.concatenate([a.kl_to_final, b.kl_to_final], 1).mean(1))
    with pytest.raises(ValueError, match="no lens results"):
        LE.summarize([])


def test_lens_input_errors():
    norm, unembed = _one_dim()
    with pytest.raises(ValueError, match="n_layers, n_pos, d_model"):
        LE.logit_lens(np.zeros((2, 1)), norm, unembed)
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        LE.logit_lens(np.zeros((2, 1, 1)), norm, unembed, k=5)


def test_near_ties_count_as_on_top_and_show_as_ties():
    """Hand-built: at layer 1 the final answer (token 0) trails token 1 by 1e-5 in logit (a
    bf16-style near-tie). The commitment must start at layer 1, the grid must say "= tie"
    there, and the page's sentence must agree with both."""
    import torch

    from backend.figures.lens import lens_figure
    from backend.views.lens import RunResult

    unembed = torch.nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        unembed.weight.copy_(torch.eye(3))
    hidden = np.array(
        [
            [[0.0, 5.0, 0.0]],  # layer 0: token 1, clearly
            [[2.0, 2.0 + 1e-5, 0.0]],  # layer 1: token 1 by a hair: a tie with token 0
            [[5.0, 0.0, 0.0]],  # layer 2 (final): token 0
        ],
        dtype=np.float32,
    )
    res = LE.logit_lens(hidden, None, unembed, k=2)
    assert res.final_rank[:, 0].tolist() == [1, 1, 0]  # strictly, token 0 is second at layer 1
    assert res.on_top[:, 0].tolist() == [False, True, True]
    assert res.tied[:, 0].tolist() == [False, True, False]
    assert res.commitment.tolist() == [1]
    fig = lens_figure(res, ["x"], {0: "A", 1: "B", 2: "C"})
    text = fig.data[0].text
    assert text[1][0] == "B = tie" and text[0][0] == "B" and text[2][0] == "A"
    assert "= tie" in fig.data[0].customdata[1][0]
    one = RunResult(lens=res, tokens=["x"], names={0: "A", 1: "B", 2: "C"})
    assert one.commitment_text() == (
        "it is on top from layer 1 on (tied within 0.1% with another token at layer 1)"
    )
    # a clear gap is not a tie: the same case with a 0.1 logit gap commits at layer 2
    hidden[1, 0, 1] = 2.1
    clear = LE.logit_lens(hidden, None, unembed, k=2)
    assert clear.commitment.tolist() == [2] and not clear.tied[1, 0]
    summ = LE.summarize([res], "last")
    assert summ.agreement.tolist() == [0.0, 1.0, 1.0]


def _reference(hidden, w, b=None):
    """float64 readout of every layer at once: log-probabilities (L, P, V)."""
    z = torch.as_tensor(hidden, dtype=torch.float64) @ w.double().T
    if b is not None:
        z = z + b.double()
    return torch.log_softmax(z, -1)


def _gpt2ish(vocab=3001, d=96, n_l=5, n_pos=40, seed=0, bias=False):
    """Random unembedding of GPT-2's init scale and layer-normed residual states whose later
    layers drift towards the final one (so KL shrinks with depth, as in a real model)."""
    g = torch.Generator().manual_seed(seed)
    unembed = torch.nn.Linear(d, vocab, bias=bias)
    with torch.no_grad():
        unembed.weight.copy_(torch.randn(vocab, d, generator=g) * 0.02 * 8)
        if bias:
            unembed.bias.copy_(torch.randn(vocab, generator=g) * 0.1)
    final = torch.randn(n_pos, d, generator=g)
    mix = torch.linspace(0, 1, n_l)[:, None, None]
    hidden = (1 - mix) * torch.randn(n_l, n_pos, d, generator=g) + mix * final
    norm = torch.nn.LayerNorm(d, elementwise_affine=False)
    return hidden.numpy(), norm, unembed


@pytest.mark.parametrize("bias", [False, True])
def test_readout_matches_the_float64_reference(bias):
    hidden, norm, unembed = _gpt2ish(bias=bias)
    res = LE.logit_lens(hidden, norm, unembed, k=5, chunk_bytes=4 * 160 * 512)
    with torch.inference_mode():
        x = norm(torch.as_tensor(hidden))
        logp = _reference(x, unembed.weight, unembed.bias if bias else None)
    p = logp.exp()
    top_p, top_i = p.topk(5, -1)
    # top-1 identical to the reference in every cell
    np.testing.assert_array_equal(res.top_ids[..., 0], top_i[..., 0].numpy())
    np.testing.assert_allclose(res.top_probs, top_p.numpy(), atol=2e-6)
    kl = (p[-1] * (logp[-1] - logp)).sum(-1).numpy()
    ent = -(p * logp).sum(-1).numpy()
    tol = 5e-5  # float32 sums of ~3,000 terms, against float64
    np.testing.assert_allclose(res.kl_to_final, kl, atol=tol)
    np.testing.assert_allclose(res.entropy, ent, atol=tol)
    assert kl[0].mean() > 0.1  # the early layers really differ from the final one
    rank = (logp > logp.gather(-1, logp[-1].argmax(-1).expand(len(logp), -1)[..., None])).sum(-1)
    agree = (res.final_rank == rank.numpy()).mean()
    assert agree == 1.0
    ratio = logp.gather(-1, top_i[-1:, :, :1].expand(len(logp), -1, -1))[..., 0] - logp.amax(-1)
    np.testing.assert_allclose(res.final_ratio, ratio.exp().numpy(), atol=1e-4)


def test_bf16_unembedding_reads_out_like_its_float32_upcast():
    """A bf16 model's lens (the norm in bf16, as the model runs it): on a CPU without AMX
    the unembedding runs in float32, ~10x faster there, and the top-1 is the float64
    reference's in every cell; with AMX the logits are bf16 products, as the model's own, so
    where two tokens are within bf16 rounding of each other (this random model's logits are
    near-uniform: 1.5% of cells) either may come first — never one further behind than
    bf16's relative precision (2^-8) of the largest |logit|; KL within 0.5% (+1e-3)."""
    hidden, norm, unembed = _gpt2ish()
    norm, unembed = norm.to(torch.bfloat16), unembed.to(torch.bfloat16)
    res = LE.logit_lens(hidden, norm, unembed, k=3)
    with torch.no_grad():
        x = norm(torch.as_tensor(hidden).bfloat16()).float()
        w = unembed.weight.float()
        logp = _reference(x, w)
        scale = (x @ w.T).abs().amax(-1)
    p = logp.exp()
    chosen = torch.as_tensor(res.top_ids[..., 0]).long()
    gap = logp.amax(-1) - logp.gather(-1, chosen[..., None])[..., 0]
    assert (gap <= 2**-8 * scale + 1e-6).all()
    assert (res.top_ids[..., 0] == logp.argmax(-1).numpy()).mean() >= 0.95
    kl = (p[-1] * (logp[-1] - logp)).sum(-1).numpy()
    np.testing.assert_allclose(res.kl_to_final, kl, rtol=5e-3, atol=1e-3)  # bf16 logits
    if LE._slow_half(unembed.weight):  # this CPU: exactly the float32 readout
        np.testing.assert_allclose(res.kl_to_final, kl, atol=5e-5)
        np.testing.assert_array_equal(res.top_ids[..., 0], logp.argmax(-1).numpy())
