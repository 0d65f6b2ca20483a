"""Generation capture: reproducible samples, states equal a fresh forward pass, cache hits."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from backend import models
from backend.analysis.commitment import commitment, consistency, correlate, pairwise_cosine_mean
from backend.generate import Sampling, generate
from backend.worker import JobSpec, Worker


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return models.load_model(str(tiny_model_dir("gpt2")), dtype="float32")


def test_fixed_seed_reproduces_samples_whatever_the_batch(lm):
    s = Sampling(samples=4, max_new_tokens=5, seed=3)
    a = generate(lm, "the cat", s)
    b = generate(lm, "the cat", s, samples=[2])
    assert a[2].token_ids == b[0].token_ids and a[2].run_id == b[0].run_id
    assert [r.token_ids for r in a] == [r.token_ids for r in generate(lm, "the cat", s)]
    assert len({tuple(r.token_ids) for r in a}) > 1  # random weights: samples differ


def test_captured_states_equal_a_fresh_forward_pass(lm):
    runs = generate(lm, "the dogs near the cat", Sampling(samples=3, max_new_tokens=6, seed=1))
    for r in runs:
        with torch.inference_mode():
            from backend.extract import CaptureSettings, Tokenized, capture

            t = Tokenized(r.text, r.token_ids, r.offsets, r.special, False, r.n_tokens)
            fresh = next(iter(capture(lm, [("x", t)], CaptureSettings())))[0].hidden
        torch.testing.assert_close(r.hidden, fresh, atol=1e-4, rtol=1e-4)
        assert r.kind == "generation" and r.n_prompt_tokens == 5


def test_generation_job_caches_by_settings_and_seed(store, lm, tiny_model_dir):
    import pandas as pd

    store.save_prompt_set("g", pd.DataFrame({"text": ["the cat", "a dog"]}))
    w = Worker(store)
    opts = Sampling(samples=3, max_new_tokens=4).key() | {"samples": 3}
    spec = JobSpec(model=str(tiny_model_dir("gpt2")), set_name="g", kind="generate",
                   dtype="float32", options=opts)
    p1 = w.run(spec)
    assert p1.status == "done" and p1.result["runs"] == 6
    p2 = w.run(spec)
    assert p2.result["runs"] == 0 and p2.result["cached_runs"] == 6
    spec.options = opts | {"seed": 9}
    assert w.run(spec).result["runs"] == 6


def test_commitment_numbers_by_hand_and_against_scipy():
    v = np.array([[1.0, 0], [0, 1], [1, 1]])
    assert pairwise_cosine_mean(v) == pytest.approx((0 + 2 * np.sqrt(0.5)) / 3)
    st = np.zeros((2, 1, 3, 2))
    st[:, 0, :, 0] = 1
    st[1, 0, 2] = [0, 1]
    c = commitment(st, [["a", "b", "c"], ["a", "b", "d"]])
    assert c.similarity[0].tolist() == [1, 1, 0] and c.divergence_step == 2
    assert consistency(["x", "x", "y"]) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    r = correlate(x, y, n_boot=200)
    assert r.pearson == pytest.approx(pearsonr(x, y)[0])
    assert r.spearman == pytest.approx(spearmanr(x, y)[0])
    assert r.ci_low < r.pearson < r.ci_high
