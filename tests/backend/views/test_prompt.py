"""The Prompt view: one run's norms per layer and token, its sets; the JSON is plain."""

import json

import numpy as np
import pandas as pd
import pytest

from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import prompt
from tests.backend.views._fake import fake_info, fake_run

N_LAYERS, D = 2, 3


@pytest.fixture
def store():
    rng = np.random.default_rng(0)
    with Store(":memory:") as s:
        s.upsert_model(fake_info(N_LAYERS, D))
        runs = [fake_run(i, rng.normal(size=(N_LAYERS + 1, n, D)).astype(np.float32))
                for i, n in enumerate((3, 4))]  # fmt: skip
        s.ingest("m", runs)
        s.save_prompt_set("s", pd.DataFrame({"text": [r.text for r in runs], "label": ["a", "b"]}))
        yield s, runs


def test_norms_tokens_and_sets_of_a_run(store):
    s, runs = store
    run = runs[1]
    res = prompt.compute(s, prompt.Request(run_id=run.run_id))
    want = np.sqrt((run.hidden.astype(np.float64) ** 2).sum(-1))  # the states as captured
    np.testing.assert_allclose(res.norms, want, rtol=2e-3)  # fp16 in the store
    assert res.n_layers == N_LAYERS + 1 and res.tokens["token"].tolist() == run.tokens
    d = json.loads(json.dumps(res.to_dict()))
    assert d["tokens"] == run.tokens and d["is_special"] == [True, False, False, False]
    assert d["sets"] == [{"set_name": "s", "idx": 1, "label": "b", "group": None}]
    np.testing.assert_allclose(d["norms"], res.norms, atol=1e-4)
    f = res.to_frame()
    assert len(f) == (N_LAYERS + 1) * 4 and f["norm"].tolist() == res.norms.ravel().tolist()


def test_unknown_run_and_wrong_model_are_one_sentence(store):
    s, runs = store
    with pytest.raises(LayerScopeError, match="No run 'nope' in the cache"):
        prompt.compute(s, prompt.Request(run_id="nope"))
    with pytest.raises(LayerScopeError, match="not a run of this model"):
        prompt.compute(s, prompt.Request(run_id=runs[0].run_id, model_id="other"))
    with pytest.raises(TypeError):
        prompt.Request("nope")  # keyword-only
