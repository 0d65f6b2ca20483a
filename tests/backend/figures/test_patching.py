"""Patching figures from hand-made results: numbers in the traces, the interval in
the hover, clickable cells, and user strings inert."""

import numpy as np
import pytest

from backend.figures.patching import distribution_figure, patching_figure
from backend.views import patching as P
from tests.backend.figures._strings import BOLD, ESC_BOLD, LINK, assert_inert


def _patching(pairs: bool = False, metric="logit-diff", component="resid"):
    req = P.Request(model="m", clean="a b c", corrupted="a d c", metric=metric, component=component,
                    set_name="s" if pairs else None, pairs=pairs, n_boot=200)  # fmt: skip
    layers, positions = [0, 1, 2], [0, 1, 2]
    patched = np.array([[0.0, 2.0, 0.0], [0.0, 1.5, 0.5], [0.0, 0.0, 2.0]])
    pr = None
    if pairs:
        rng = np.random.default_rng(0)
        pr = patched[None] / 2 + rng.normal(0, 0.1, size=(6, 3, 3))
    return P.Result(
        request=req, layers=layers, positions=positions, tokens=["a", BOLD, LINK],
        corrupted_tokens=["a", "d", LINK], answer=BOLD, against="y", clean_metric=2.0,
        corrupted_metric=0.0, patched=patched,
        top_tokens=[[[BOLD, "y"] for _ in positions] for _ in layers],
        top_probs=np.full((3, 3, 2), 0.4, dtype=np.float32), clean_source="computed",
        metric=metric, component=component, pair_recovery=pr,
        pair_texts=[("x", "y")] * 6 if pairs else None,
        pair_metrics=[(2.0, 0.0)] * 6 if pairs else None,
    )  # fmt: skip


def test_heatmap_shows_recovery_and_every_cell_is_clickable():
    res = _patching()
    fig = patching_figure(res)
    heat, cells = fig.data
    np.testing.assert_allclose(heat.z, res.recovery)
    assert (heat.zmin, heat.zmax, heat.zmid) == (-1, 1, 0)
    assert list(heat.y) == [0, 1, 2] and heat.hoverinfo == "skip"
    assert len(cells.customdata) == 9 and [1, 2] in [list(c) for c in cells.customdata]
    i = [list(c) for c in cells.customdata].index([1, 1])
    assert "recovery +0.750" in cells.text[i] and cells.marker.opacity < 0.05
    assert "logit(" in fig.layout.title.text and "residual stream" in fig.layout.title.text
    texts = assert_inert(fig)
    assert any(ESC_BOLD in t for t in texts)


def test_pairs_hover_gives_mean_interval_and_n():
    res = _patching(pairs=True)
    fig = patching_figure(res)
    iv = res.interval()
    i = [list(c) for c in fig.data[1].customdata].index([1, 1])
    hover = fig.data[1].text[i]
    assert f"mean recovery {res.recovery[1, 1]:+.3f}" in hover
    assert f"[{iv.lo[1, 1]:+.3f}, {iv.hi[1, 1]:+.3f}], n = 6 pairs" in hover
    assert "mean of 6 pairs" in fig.layout.title.text
    assert_inert(fig)


@pytest.mark.parametrize("component, words", [("attn", "attention output"), ("mlp", "MLP")])
def test_title_names_metric_and_component(component, words):
    fig = patching_figure(_patching(metric="prob", component=component))
    assert fig.layout.title.text.startswith("p(") and words in fig.layout.title.text


def test_distribution_figure_groups_patched_clean_corrupted():
    d = P.CellDistribution(1, 2, "resid", [BOLD, "b"], np.array([0.6, 0.3]),
                           np.array([0.7, 0.2]), np.array([0.1, 0.8]))  # fmt: skip
    fig = distribution_figure(d)
    assert [t.name for t in fig.data] == ["patched", "clean", "corrupted"]
    np.testing.assert_allclose(fig.data[2].y, [0.1, 0.8])
    assert "layer 1, position 2" in fig.layout.title.text
    assert_inert(fig)
