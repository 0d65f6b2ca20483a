"""Projection cache in the store: round trip, keys that change with every input, job kind."""

import numpy as np
import pandas as pd
import pytest

from backend import derived
from backend.analysis.projection import Projection
from backend.errors import LayerScopeError
from backend.jobs.kinds import JOB_KINDS
from backend.views import trajectories as TV

META = pd.DataFrame({"run_id": ["a", "b", "c"], "pos": [-1, -1, -1]})


def req(**kw):
    return TV.Request(**{"model_id": "m", "set_name": "s", "layers": (0, 1), **kw})


@pytest.mark.parametrize("ev", [None, np.array([0.5, 0.25])])
def test_cache_round_trip(store, ev):
    p = Projection(
        np.arange(12, dtype=np.float32).reshape(2, 3, 2), (0, 1), "umap", ev, "d", True, 7
    )
    store.cache_put(
        TV.CACHE_KIND, TV.cache_key(req(method="umap"), META), derived.pack(projection=p)
    )
    got = TV.cached(store, req(method="umap"), META)
    np.testing.assert_array_equal(got.coords, p.coords)
    assert (got.layers, got.method, got.standardized, got.seed) == ((0, 1), "umap", True, 7)
    assert (got.explained_variance is None) == (ev is None)
    assert TV.cached(store, req(method="umap", seed=1), META) is None


def test_cache_key_changes_with_each_input():
    base = TV.cache_key(req(), META)
    for change in (
        {"layers": (1, 2)},
        {"method": "umap"},
        {"dims": 3},
        {"pool": "mean"},
        {"standardize": False},
        {"seed": 1},
        {"sample": 2},
        {"unit": "token"},
    ):
        assert TV.cache_key(req(**change), META) != base, change
    assert TV.cache_key(req(), META.assign(pos=[0, 1, 2])) != base
    assert TV.cache_key(req(), META.copy()) == base


def test_request_is_keyword_only_and_standardises_by_default():
    with pytest.raises(TypeError):
        TV.Request("m", "s", (0, 1))
    assert req().standardize is True  # as the CLI and the page


def test_request_validation():
    with pytest.raises(LayerScopeError, match="Unknown method"):
        req(method="tsne")
    with pytest.raises(LayerScopeError, match="at least one layer"):
        req(layers=())
    assert req(method="umap", dims=3).units_only() == req()


def test_trajectories_is_a_worker_job_kind():
    from backend.jobs.trajectories import run_trajectories_job

    # "project": the kind of the rows stored before the rename still runs
    assert JOB_KINDS["trajectories"] is JOB_KINDS["project"] is run_trajectories_job
    opts = TV.job_spec_options(req(method="umap"))
    assert opts["layers"] == [0, 1] and TV.Request(**{**opts, "layers": (0, 1)}) == req(
        method="umap"
    )
