"""The Similarity view's units: drawn from the unit table first, only the sample read; the
same matrices as reading every unit and sampling after."""

import numpy as np
import pandas as pd
import pytest

from backend.analysis import similarity as S
from backend.records import CapturedRun
from backend.store import Store
from backend.views import similarity as V
from tests.backend.views._fake import fake_info, fake_run

N_LAYERS, D = 3, 8
LENGTHS = (4, 6, 3, 5, 2)


def _run(i: int, n: int) -> CapturedRun:
    h = np.random.default_rng(i).normal(size=(N_LAYERS + 1, n, D)).astype(np.float32)
    return fake_run(i, h)


@pytest.fixture
def store():
    with Store(":memory:") as s:
        s.upsert_model(fake_info(N_LAYERS, D))
        runs = [_run(i, n) for i, n in enumerate(LENGTHS)]
        s.ingest("m", runs)
        labels = ["a", "b", "a", "b", "a"]
        s.save_prompt_set("s", pd.DataFrame({"text": [r.text for r in runs], "label": labels}))
        yield s


def _naive(store, max_units):
    """The reference: every token of every layer read and stacked, specials dropped, then the
    view's seeded sample."""
    ids = store.set_runs("s", "m")["run_id"].tolist()
    xs, idx = [], None
    for layer in range(N_LAYERS + 1):
        x, idx = store.layer(ids, layer)
        xs.append(x)
    keep = ~store.special_mask(ids, len(idx))
    x, meta = np.stack(xs)[:, keep], idx[keep].reset_index(drop=True)
    pick = np.sort(np.random.default_rng(0).choice(len(meta), max_units, replace=False))
    return x[:, pick], meta.iloc[pick].reset_index(drop=True)


@pytest.mark.parametrize("kind", ["layer-cka", "layer-cosine"])
def test_layer_matrices_read_only_the_sampled_tokens(store, monkeypatch, kind):
    x, ref = _naive(store, 4)
    asked = []
    real = store.rows

    def spy(ids, pos, layer):
        asked.append(list(ids))
        return real(ids, pos, layer)

    monkeypatch.setattr(store, "rows", spy)
    v = V.compute(store, V.Request(kind=kind, model_id="m", set_name="s", max_units=4))
    assert v.n_available == sum(LENGTHS) - len(LENGTHS) and len(v.units) == 4
    assert v.units["run_id"].tolist() == ref["run_id"].tolist()
    assert v.units["pos"].tolist() == ref["pos"].tolist()
    layers = list(range(N_LAYERS + 1))
    want = S.layer_cka(x, layers) if kind == "layer-cka" else S.layer_cosine_matrix(x, layers)
    np.testing.assert_array_equal(v.matrix.values, want.values)
    assert len(asked) == N_LAYERS + 1  # one read per layer, of the sampled units only
    assert all(a == ref["run_id"].tolist() for a in asked)
    # the turning units of a clicked pair: the view's own units, read again at two layers
    turn = V.turning_units(
        store, V.Request(kind=kind, model_id="m", set_name="s", max_units=4), v, 0, 3, k=4
    )
    a, b = x[0], x[3]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    np.testing.assert_allclose(np.sort(turn["cosine"]), np.sort(cos), rtol=1e-6)


def test_prompt_units_of_a_sample_are_the_pooled_vectors(store):
    v = V.compute(
        store, V.Request(kind="layer-cka", model_id="m", set_name="s", units="last", max_units=3)
    )
    ids = store.set_runs("s", "m")["run_id"].tolist()
    pick = np.sort(np.random.default_rng(0).choice(len(ids), 3, replace=False))
    x = store.pooled(ids, "last")[:, pick]
    want = S.layer_cka(x, list(range(N_LAYERS + 1)))
    np.testing.assert_array_equal(v.matrix.values, want.values)
    assert v.units["run_id"].tolist() == [ids[i] for i in pick]


def test_prompts_order_by_group_with_the_groups_as_the_strip(store):
    texts = store.get_set("s")["text"].tolist()
    groups = ["far", "near", None, "far", "mid"]
    store.save_prompt_set(
        "g", pd.DataFrame({"text": texts, "label": list("ababa"), "group": groups})
    )
    v = V.compute(
        store, V.Request(kind="prompt", model_id="m", set_name="g", units="last", order="group")
    )
    rows = [v.matrix.rows[i] for i in v.matrix.order]
    strip = [v.matrix.row_labels[i] for i in v.matrix.order]
    assert strip == ["far", "far", "mid", "near", None]  # by group, stable, missing last
    assert rows[0].startswith("0: ") and rows[1].startswith("3: ")
    plain = V.compute(
        store, V.Request(kind="prompt", model_id="m", set_name="g", units="last", order="none")
    )
    np.testing.assert_array_equal(v.matrix.values, plain.matrix.values)  # same numbers
    with pytest.raises(Exception, match="has no groups"):
        V.compute(
            store, V.Request(kind="prompt", model_id="m", set_name="s", units="last", order="group")
        )
