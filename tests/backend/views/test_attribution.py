"""Attribution: the components sum to a plain Hugging Face forward's logit difference (tiny
GPT-2, Llama, NeoX and the demo), heads sum to their layer's attention term, one head's term
equals a hand-written computation from the attention pattern and the value / output weights,
the graph is non-empty with the answer's node on its route, the CLI's JSON."""

import json

import numpy as np
import pytest
import torch

from backend import models
from backend.cli import main
from backend.errors import LayerScopeError
from backend.views import attribution as V

PROMPT = "the cat near the dogs is"
DEMO = "the teacher above the boys always"


def _hf(path, prompt, pos, answer, against):
    """(ids, logit(answer) - logit(against) at pos) from a plain forward, float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok(prompt)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, pos].double()
    a, b = (tok.encode(" " + w if " " + w in tok.get_vocab() else w, add_special_tokens=False)
            for w in (answer, against))  # fmt: skip
    return ids, model, float(logits[a[-1]] - logits[b[-1]])


def _lm(path):
    lm = models.load_model(str(path), "float32", "cpu")
    lm.model.set_attn_implementation("eager")
    return lm


@pytest.fixture(scope="module")
def lms(tiny_model_dir):
    return {f: _lm(tiny_model_dir(f)) for f in ("gpt2", "llama", "gpt_neox")}


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_components_sum_to_the_models_logit_difference(lms, tiny_model_dir, family):
    lm = lms[family]
    res = V.compute(None, V.Request(model=str(tiny_model_dir(family)), prompt=PROMPT,
                                    answer="is", against="are", dtype="float32"), lm=lm)  # fmt: skip
    _, _, want = _hf(tiny_model_dir(family), PROMPT, res.position, "is", "are")
    assert res.logit_diff == pytest.approx(want, abs=1e-5)
    assert abs(res.total - want) <= 1e-3
    # the check has teeth: the terms are far larger than the tolerance
    assert max(abs(res.attn).max(), abs(res.mlp).max(), abs(res.embed)) > 1e-2
    np.testing.assert_allclose(res.heads.sum(1) + res.head_bias, res.attn, atol=1e-6)
    assert res.heads.shape == (3, 4)
    d = res.to_dict()
    assert sum(c["value"] for c in d["components"]) == pytest.approx(want, abs=1e-3)
    assert {c["kind"] for c in d["components"]} == {"embed", "attn", "mlp", "bias"}


def test_demo_agreement_pair_sums_to_the_hf_forward():
    res = V.compute(None, V.Request(model="demo", prompt=DEMO, answer="helps", against="help",
                                    dtype="float32"))  # fmt: skip
    path = models.resolve("demo").path
    _, _, want = _hf(path, DEMO, res.position, "helps", "help")
    assert res.answer.strip() == "helps" and res.against.strip() == "help"
    assert abs(res.total - want) <= 1e-3 and want > 1  # the model prefers 'helps'
    np.testing.assert_allclose(res.heads.sum(1) + res.head_bias, res.attn, atol=1e-5)
    g = res.to_dict()["graph"]
    assert g["edges"] and g["answer_node"] == [4, len(res.tokens) - 1]
    on = [e for e in g["edges"] if e["route"]]
    assert on and any(e["target"] == g["answer_node"] for e in on)
    assert len(g["nodes"]) == 5 * len(res.tokens)


def _readout(lm, final, u):
    """u · d ln_f(x)/dx frozen at ``final``, written out: for a vector v, the logit part."""
    w = lm.final_norm.weight.detach().double()
    if isinstance(lm.final_norm, torch.nn.LayerNorm):
        s = torch.sqrt(final.var(unbiased=False) + lm.final_norm.eps)
        return lambda v: float((u @ (w * (v - v.mean()) / s)).detach())
    s = torch.sqrt(final.pow(2).mean() + lm.final_norm.variance_epsilon)
    return lambda v: float((u @ (w * v / s)).detach())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_one_head_by_hand(lms, tiny_model_dir, family):
    lm, layer, head = lms[family], 1, 2
    path = tiny_model_dir(family)
    res = V.compute(None, V.Request(model=str(path), prompt=PROMPT, answer="is",
                                    against="are"), lm=lm)  # fmt: skip
    ids = lm.tokenizer(PROMPT)["input_ids"]
    pos, model = len(ids) - 1, lm.model
    seen = {}
    blk = lm.blocks[layer]
    hooks = [blk.register_forward_pre_hook(lambda m, a, k: seen.__setitem__(
                 "x", (a[0] if a else k["hidden_states"])[0].double()), with_kwargs=True),
             lm.final_norm.register_forward_pre_hook(
                 lambda m, a: seen.__setitem__("final", a[0][0, pos].double()))]  # fmt: skip
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([ids]), output_attentions=True)
    for h in hooks:
        h.remove()
    alpha = out.attentions[layer][0, head, pos].double()  # (T,)
    x = seen["x"]
    H, d = 4, 32
    hd = d // H
    if family == "gpt2":
        a = blk.attn
        xn = blk.ln_1(x.float()).double()
        W = a.c_attn.weight.double()  # Conv1D (in, 3d)
        v = xn @ W[:, 2 * d :] + a.c_attn.bias.double()[2 * d :]
        v_h = v[:, head * hd : (head + 1) * hd]
        Wo_h = a.c_proj.weight.double()[head * hd : (head + 1) * hd]  # (hd, d)
    else:
        a = blk.self_attn
        xn = blk.input_layernorm(x.float()).double()
        kv = head // (H // 2)  # GQA: 2 key/value heads for 4 query heads
        v = xn @ a.v_proj.weight.double().T
        v_h = v[:, kv * hd : (kv + 1) * hd]
        Wo_h = a.o_proj.weight.double()[:, head * hd : (head + 1) * hd].T
    vec = (alpha @ v_h) @ Wo_h
    W_U = lm.unembed.weight.double()
    tok = lm.tokenizer
    ia, ib = (tok.convert_tokens_to_ids(w) for w in ("is", "are"))
    term = _readout(lm, seen["final"], W_U[ia] - W_U[ib])(vec)
    assert res.heads[layer, head] == pytest.approx(term, abs=1e-6)
    assert abs(term) > 1e-4


def test_single_tokens_only_and_positions(lms, tiny_model_dir):
    path, lm = str(tiny_model_dir("gpt2")), lms["gpt2"]
    with pytest.raises(LayerScopeError, match="not one token"):
        V.compute(None, V.Request(model=path, prompt=PROMPT, answer="is are"), lm=lm)
    with pytest.raises(LayerScopeError, match="Position 9"):
        V.compute(None, V.Request(model=path, prompt=PROMPT, position=9), lm=lm)
    with pytest.raises(LayerScopeError, match="Type a prompt"):
        V.Request(model=path, prompt=" ")
    res = V.compute(None, V.Request(model=path, prompt=PROMPT, position=-2), lm=lm)
    assert res.position == len(res.tokens) - 2 and res.against is None
    assert res.logit_diff == pytest.approx(res.total, abs=1e-4)  # the answer's logit alone


def test_cli_json(db, tiny_model_dir, capsys):
    path = str(tiny_model_dir("gpt_neox"))
    argv = ["attribution", "--model", path, "--prompt", PROMPT]
    capsys.readouterr()
    assert main([*argv, "--answer", "is", "--against", "are", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("tokens", "target", "components", "heads", "graph"):
        assert key in r
    assert set(r["target"]) == {"answer", "against", "logit_diff"}
    assert r["sum_error"] < 1e-3 and len(r["heads"]) == 3 * 4
    assert set(r["graph"]) >= {"nodes", "edges"}
    assert main([*argv, "--answer", "is", "--against", "are"]) == 0  # prose
    assert "components sum" in capsys.readouterr().out
    assert main([*argv, "--answer", "cat dog"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not one token" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
def test_node_lens_is_the_lens_views_readout(lms, tiny_model_dir, family):
    from backend.views import lens

    lm, path = lms[family], str(tiny_model_dir(family))
    res = V.compute(None, V.Request(model=path, prompt=PROMPT, threshold=0.1), lm=lm)
    want = lens.compute(None, lens.Request(model=path, prompt=PROMPT, top=V.LENS_TOP), lm=lm).run
    nodes = V.graph_nodes(res.graph)
    assert set(res.node_lens) == set(nodes) and (len(res.attn), res.position) in nodes
    for la, p in nodes:
        toks, probs = zip(*res.node_lens[(la, p)])
        assert list(toks) == [want.names[int(i)] for i in want.lens.top_ids[la, p]]
        np.testing.assert_allclose(probs, want.lens.top_probs[la, p], atol=1e-5)
    lens_json = res.to_dict()["graph"]["lens"]
    assert [[n["layer"], n["position"]] for n in lens_json] == [list(n) for n in nodes]
    assert all(len(n["tokens"]) == V.LENS_TOP == len(n["probs"]) for n in lens_json)


def test_patch_links_open_a_valid_patching_request(store, lms, tiny_model_dir):
    from backend.views import patching

    res = V.compute(None, V.Request(model="demo", prompt=DEMO, answer="helps", against="help"))
    links = V.patch_links(res)
    assert 1 <= len(links) <= 3
    q = links[0]["query_params"]
    assert q["clean"] == DEMO and q["corrupted"] == "the teachers above the boy always"
    assert (q["answer"], q["against"], q["component"]) == ("helps", "help", "resid")
    layer, pos = (int(v) for v in q["cell"].split(","))
    edge = max((e for e in res.graph.edges if e.source[1] != e.target[1]),
               key=lambda e: (e.route, e.weight))  # fmt: skip
    assert (layer, pos) == edge.source
    req = patching.Request(model="demo", clean=q["clean"], corrupted=q["corrupted"],
                           answer=q["answer"], against=q["against"],
                           layers=(layer,), positions=(pos,))  # fmt: skip
    cell = patching.compute(store, req)
    assert np.isfinite(cell.recovery).all()
    # a prompt outside the sets: no corrupted prompt; another position than the last: no links
    path = str(tiny_model_dir("gpt2"))
    lone = V.compute(None, V.Request(model=path, prompt=PROMPT), lm=lms["gpt2"])
    assert V.patch_links(lone)
    assert all("corrupted" not in link["query_params"] for link in V.patch_links(lone))
    early = V.compute(None, V.Request(model=path, prompt=PROMPT, position=-2), lm=lms["gpt2"])
    assert V.patch_links(early) == []
