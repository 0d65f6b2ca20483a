"""The commitment strip: the layer from which each emitted token is the lens's top-1."""

import numpy as np
import pandas as pd

from backend.figures.generation import strip_figure, tree_figure
from backend.views.generation import decided_at, prefix_tree


def test_decided_at_by_hand():
    # 3 layers (0..2) x 4 positions; prompt = 2 tokens, generated = tokens 2 and 3
    top1 = np.array([[9, 9, 9, 9], [9, 5, 7, 9], [9, 5, 6, 9]])
    ids = [1, 2, 5, 6]
    # token 5 (pos 2) is predicted at pos 1: layers 1, 2 have 5 -> decided at 1
    # token 6 (pos 3) is predicted at pos 2: only layer 2 has 6 -> decided at 2
    assert decided_at(top1, ids, 2) == [1, 2]
    # a token the last layer does not have on top was sampled off the top
    assert decided_at(top1, [1, 2, 5, 8], 2) == [1, None]
    # on top at layer 0, off at 1, on at 2: "from which it stays" is layer 2
    assert decided_at(np.array([[4, 0], [3, 0], [4, 0]]), [0, 4], 1) == [2]


def test_strip_on_a_tiny_model_matches_an_independent_lens(tmp_path, tiny_model_dir):
    from backend import models
    from backend.analysis.lens import logit_lens
    from backend.jobs.base import JobSpec
    from backend.jobs.worker import Worker
    from backend.records import Sampling
    from backend.store import Store
    from backend.views.generation import commitment_strip

    path = str(tiny_model_dir("gpt2"))
    with Store(tmp_path / "s.duckdb") as store:
        store.save_prompt_set("g", pd.DataFrame({"text": ["the cat"]}))
        s = Sampling(samples=2, max_new_tokens=4, temperature=0.05, seed=1)
        p = Worker(store).run(
            JobSpec(
                model=path,
                set_name="g",
                kind="generate",
                dtype="float32",
                options=s.key() | {"samples": 2},
            )
        )
        assert p.status == "done", p.message
        lm = models.load_model(path, dtype="float32")
        run_id = store.runs_for_model(p.result["model_id"], "generation")["run_id"].iloc[0]
        strip = commitment_strip(store, lm, run_id)
        ref = logit_lens(store.run_layers(run_id), lm.final_norm, lm.unembed, k=1)
        ids = store.tokens(run_id)["token_id"].astype(int).tolist()
        n_p = int(store.get_run(run_id)["n_prompt_tokens"])
        want = []
        for t in range(n_p, len(ids)):
            col = ref.top_ids[:, t - 1, 0] == ids[t]
            want.append(
                None
                if not col[-1]
                else int(len(col) - np.argmin(col[::-1]) if not col.all() else 0)
            )
        got = strip["decided_at_layer"].tolist()
        assert [None if g != g else g for g in got] == want
        assert len(strip) == len(ids) - n_p and set(strip.columns) >= {"token", "step"}
        # the branch probability is the model's own next-token probability (plain forward)
        import torch

        with torch.inference_mode():
            logits = lm.model(torch.tensor([ids])).logits[0].float()
        want_p = torch.softmax(logits, -1)[torch.arange(n_p - 1, len(ids) - 1), ids[n_p:]]
        np.testing.assert_allclose(strip["p_token"], want_p.numpy(), atol=2e-2)  # fp16 states


def test_tree_branch_probabilities_come_from_the_first_member_run():
    tree = prefix_tree([["a", "b"], ["a", "c"]], probabilities=[[0.9, 0.3], [0.9, 0.2]])
    (a,) = tree["children"]
    assert a["probability"] == 0.9 and [c["probability"] for c in a["children"]] == [0.3, 0.2]
    assert "probability" in tree_figure(tree).data[0].hovertext[1]


def test_tree_and_strip_figures_show_every_branch_and_escape_tokens():
    tree = prefix_tree([["a", "<b>"], ["a", "c"], ["d"]])
    fig = tree_figure(tree)
    ic = fig.data[0]
    assert ic.values[0] == 3 and sum(v for v, p in zip(ic.values, ic.parents) if p == "root") == 3
    assert "&lt;b&gt;" in list(ic.labels) and "<b>" not in list(ic.labels)
    strips = [pd.DataFrame({"token": ["a", "<b>"], "decided_at_layer": [1, None]})]
    hm = strip_figure(strips, 4).data[0]
    assert hm.zmin == 0 and hm.zmax == 4 and np.isnan(hm.z[0][1]) and hm.text[0][1] == "&lt;b&gt;"
