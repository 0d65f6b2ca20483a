"""Tuned lens on the bundled demo model (4 layers, d = 128): identity at the last layer,
tuned KL below the logit lens on held-out prompts, save/load round trip."""

import numpy as np
import pandas as pd
import pytest

from backend import models
from backend.analysis import lens as LE
from backend.analysis import tuned_lens as TL
from backend.capture import extract

pytestmark = pytest.mark.slow  # trains a lens (~20 s on two shared cores)


@pytest.fixture(scope="module")
def demo_states():
    lm = models.load_model("demo", dtype="float32")
    root = models.resolve("demo").path.parents[1] / "sets"  # backend/demo/sets
    texts = pd.read_csv(root / "topic.csv")["text"].tolist()[:40]
    items = [(str(i), t) for i, t in enumerate(extract.tokenize(lm.tokenizer, texts))]
    caps = extract.capture(lm, items, extract.CaptureSettings(), exact=True)
    hidden = {r.run_id: np.asarray(r.hidden, np.float32) for runs in caps for r in runs}
    return lm, [hidden[str(i)] for i in range(len(texts))]


@pytest.fixture(scope="module")
def trained(demo_states):
    lm, hs = demo_states
    return TL.train_tuned_lens(hs, lm.final_norm, lm.unembed, steps=120, lr=3e-3, seed=0)


def test_last_layer_translator_is_the_identity(trained, demo_states):
    _lm, hs = demo_states
    assert trained.layers == (0, 1, 2, 3, 4)
    assert np.abs(trained.weight[-1]).max() < 1e-6 and np.abs(trained.bias[-1]).max() < 1e-6
    np.testing.assert_allclose(trained.translate(hs[0])[-1], hs[0][-1], atol=1e-6)
    assert trained.kl_tuned[-1] == pytest.approx(0, abs=1e-6)
    assert np.abs(trained.weight[0]).max() > 1e-3  # the other layers did train


def test_tuned_kl_is_below_the_logit_lens_on_held_out_prompts(trained):
    assert trained.n_test == 10 and trained.n_train == 30
    early = slice(0, -1)
    assert (trained.kl_tuned[early] <= trained.kl_logit[early]).all()
    assert trained.kl_tuned[0] < 0.2 * trained.kl_logit[0]  # the biased embedding layer
    # the held-out logit KL equals the logit lens's own KL over those positions
    assert trained.kl_logit[0] > 1.0


def test_logit_kl_matches_the_logit_lens(demo_states):
    lm, hs = demo_states
    t = TL.train_tuned_lens(hs[:4], lm.final_norm, lm.unembed, steps=0, test_share=0.5)
    assert np.abs(t.weight).max() == 0 and np.allclose(t.kl_tuned, t.kl_logit)
    order = np.random.default_rng(0).permutation(4)
    test = sorted(order[:2])
    kl = np.concatenate(
        [LE.logit_lens(hs[i], lm.final_norm, lm.unembed, k=1).kl_to_final for i in test], 1
    )
    np.testing.assert_allclose(t.kl_logit, kl.mean(1), rtol=1e-3, atol=1e-5)


def test_tuned_readout_save_and_load(trained, demo_states, tmp_path):
    lm, hs = demo_states
    res = TL.tuned_logit_lens(hs[0], trained, lm.final_norm, lm.unembed, k=3)
    assert res.top_ids.shape == (5, hs[0].shape[1], 3)
    assert res.kl_to_final[-1] == pytest.approx(np.zeros(hs[0].shape[1]), abs=1e-4)
    trained.save(tmp_path / "t.npz")
    back = TL.TunedLens.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.weight, trained.weight)
    assert back.layers == trained.layers and back.steps == trained.steps
    with pytest.raises(ValueError, match="two prompts"):
        TL.train_tuned_lens(hs[:1], lm.final_norm, lm.unembed)
