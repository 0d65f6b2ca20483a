import numpy as np
import pandas as pd
import plotly.graph_objects as go

from backend.analysis.commitment import OutcomeSeparation, outcome_separation
from backend.figures.generation import (
    commitment_heatmap,
    correlation_heatmap,
    scatter_figure,
    separation_figure,
)
from tests.backend.figures._strings import BOLD, ESC_BOLD, ESC_LINK, LINK, MD, assert_inert


def test_commitment_heatmap_is_layer_by_step_on_a_fixed_cosine_scale():
    sim = np.random.default_rng(0).uniform(0.2, 0.9, size=(4, 6))
    fig = commitment_heatmap(sim, divergence=2)
    (h,) = fig.data
    assert (h.zmin, h.zmax) == (-1, 1)
    np.testing.assert_allclose(h.z, sim)
    assert list(h.x) == list(range(6)) and list(h.y) == list(range(4))
    assert h.colorbar.title.text == "mean cosine"
    assert "layer %{y}, step %{x}" in h.hovertemplate
    (line,) = fig.layout.shapes
    assert line.x0 == line.x1 == 1.5
    assert fig.layout.annotations[0].text == "tokens diverge"
    assert fig.layout.xaxis.title.text == "generation step (0 = last prompt token)"
    assert fig.layout.yaxis.title.text == "layer"
    assert fig.layout.title.text.startswith("How similar the sampled runs are")
    assert not commitment_heatmap(sim, None).layout.shapes


def test_commitment_heatmap_title_is_escaped():
    fig = commitment_heatmap(np.zeros((2, 3)), None, title=LINK)
    assert_inert(fig)
    assert fig.layout.title.text == ESC_LINK


def _table(seed=0):
    rng = np.random.default_rng(seed)
    n = 9
    return pd.DataFrame(
        {
            "prompt": [f"prompt {i}" for i in range(n)],
            "label": ["yes", "no", None, "yes", "no", "yes", None, "yes", "no"],
            "commitment": rng.uniform(0, 1, n),
            "consistency": rng.uniform(0, 1, n),
        }
    )


def test_scatter_has_a_trace_per_label_and_every_prompt_once():
    table = _table()
    fig = scatter_figure(table, "Commitment at layer 3, step 2: r = 0.41")
    assert [t.name for t in fig.data] == ["(none)", "no", "yes"]
    assert sum(len(t.x) for t in fig.data) == len(table)
    shown = sorted(h for t in fig.data for h in t.hovertext)
    assert shown == sorted(table["prompt"])
    for t in fig.data:
        rows = table[table["label"].fillna("(none)") == t.name]
        np.testing.assert_allclose(t.x, rows["commitment"])
        np.testing.assert_allclose(t.y, rows["consistency"])
        assert list(t.hovertext) == list(rows["prompt"])
    assert len({t.marker.color for t in fig.data}) == 3
    assert fig.layout.title.text == "Commitment at layer 3, step 2: r = 0.41"
    assert fig.layout.xaxis.title.text == "commitment (cross-run cosine)"
    assert fig.layout.yaxis.title.text == "consistency (agreeing pairs of outcomes)"


def test_scatter_prompts_labels_and_title_are_escaped():
    table = _table()
    table["prompt"] = [LINK, BOLD, MD] * 3
    table["label"] = [BOLD, MD, LINK] * 3
    fig = scatter_figure(table, BOLD)
    assert_inert(fig)
    assert sorted(t.name for t in fig.data) == sorted([ESC_BOLD, ESC_LINK, MD])
    (t,) = [t for t in fig.data if t.name == ESC_BOLD]
    assert list(t.hovertext) == [ESC_LINK] * 3
    assert fig.layout.title.text == ESC_BOLD


def test_correlation_grid_keeps_blank_cells_on_a_fixed_scale():
    grid = np.random.default_rng(1).uniform(-0.3, 0.6, size=(3, 5))
    grid[1, 4] = np.nan
    (h,) = correlation_heatmap(grid).data
    assert (h.zmin, h.zmax) == (-1, 1)
    z = np.asarray(h.z, dtype=float)
    assert z.shape == (3, 5) and np.isnan(z[1, 4]) and np.isfinite(np.delete(z.ravel(), 9)).all()
    assert h.colorbar.title.text == "Pearson r"
    assert "r = %{z:.2f}" in h.hovertemplate


def _sep(judged=True):
    success = np.array([True, True, True, False])
    return OutcomeSeparation(
        accuracy=np.array([0.5, 0.75, 1.0]),
        auroc=np.array([0.4, 0.8, 0.95]),
        score=np.zeros((3, 4)),
        success=success,
        judged=np.full(4, judged),
        best_layer=2 if judged else None,
    )


def test_separation_shows_auroc_accuracy_chance_and_majority():
    sep = _sep()
    fig = separation_figure(sep)
    assert [t.name for t in fig.data] == ["AUROC", "nearest-centroid accuracy"]
    np.testing.assert_allclose(fig.data[0].y, sep.auroc)
    np.testing.assert_allclose(fig.data[1].y, sep.accuracy)
    assert list(fig.data[0].x) == [0, 1, 2]
    lines = {(s.y0, s.y1) for s in fig.layout.shapes if s.x0 == 0 and s.x1 == 1}
    assert lines == {(0.5, 0.5), (0.75, 0.75)}  # chance, majority outcome (3 of 4)
    best = [s for s in fig.layout.shapes if s.y0 == 0 and s.y1 == 1 and s.x0 == s.x1]
    assert [s.x0 for s in best] == [2]
    assert {a.text for a in fig.layout.annotations} == {"chance (AUROC)", "majority outcome"}
    assert tuple(fig.layout.yaxis.range) == (0, 1.02)
    assert fig.layout.xaxis.title.text == "layer"


def test_separation_without_judged_runs_has_no_best_layer():
    fig = separation_figure(_sep(judged=False))
    assert len(fig.layout.shapes) == 2
    assert all(s.y0 == 0.5 for s in fig.layout.shapes)


def test_separation_of_real_runs():
    rng = np.random.default_rng(2)
    success = np.array([True, False] * 6)
    deltas = rng.normal(size=(12, 3, 4))
    deltas[:, 2, 0] += 3 * success
    sep = outcome_separation(deltas, success, np.repeat(np.arange(6), 2))
    fig = separation_figure(sep)
    assert all(isinstance(t, go.Scatter) and len(t.y) == 3 for t in fig.data)
    assert sep.best_layer == 2 and any(s.x0 == 2 for s in fig.layout.shapes)


def test_commitment_heatmap_can_spread_its_scale_over_the_observed_range():
    sim = np.full((3, 4), 0.99)
    sim[2, 3] = 0.95
    sim[0, 0] = np.nan
    hm = commitment_heatmap(sim, None, spread=True).data[0]
    assert 0.94 < hm.zmin < hm.zmax <= 0.991 and "observed" in hm.colorbar.title.text
    fixed = commitment_heatmap(sim, None).data[0]
    assert (fixed.zmin, fixed.zmax) == (-1, 1)
