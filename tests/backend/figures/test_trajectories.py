import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from backend.analysis.projection import Projection
from backend.figures._parts import untyped
from backend.figures.trajectories import (
    categories,
    highlight_unit,
    silhouette_figure,
    trajectory_figure,
)


def _proj(n_layers=3, n_units=10, k=2):
    RNG = np.random.default_rng(0)  # per test: order-independent
    return Projection(
        RNG.normal(size=(n_layers, n_units, k)).astype(np.float32),
        tuple(range(n_layers)),
        "pca",
        None,
        "test",
    )


def _meta(n, labels=("singular", "plural"), tokens=None):
    return pd.DataFrame(
        {
            "text": [f"prompt {i}" for i in range(n)],
            "label": [labels[i % len(labels)] for i in range(n)],
            "group": "g",
            "pos": np.arange(n) % 4,
            "token": tokens if tokens is not None else [f"t{i % 3}" for i in range(n)],
        }
    )


def _markers(fig):
    return [t for t in fig.data if t.mode == "markers"]


def test_label_traces_carry_every_unit_once_with_its_label():
    proj, meta = _proj(), _meta(10)
    fig = trajectory_figure(proj, meta, "label")
    m = _markers(fig)
    assert sorted(t.name for t in m) == ["plural", "singular"]
    ids = np.concatenate([untyped(t.customdata) for t in m])
    assert sorted(ids) == list(range(10))
    for t in m:
        assert all(meta.loc[int(i), "label"] == t.name for i in untyped(t.customdata))
        assert all(f"label {t.name}" in h for h in t.hovertext)
    assert "10 units × 3 layers = 30 points" in fig.layout.title.text


def test_markers_show_the_chosen_layer_and_frames_every_layer():
    proj, meta = _proj(), _meta(10)
    fig = trajectory_figure(proj, meta, "label", layer=1)
    t = _markers(fig)[0]
    np.testing.assert_allclose(untyped(t.x), proj.coords[1, untyped(t.customdata), 0])
    assert [f.name for f in fig.frames] == ["0", "1", "2"]
    for li, f in enumerate(fig.frames):
        for tr, base in zip(f.data, _markers(fig)):
            np.testing.assert_allclose(untyped(tr.y), proj.coords[li, untyped(base.customdata), 1])
            assert f"layer {li}" in tr.hovertemplate
    assert fig.layout.sliders[0].active == 1
    assert next(b.label for b in fig.layout.updatemenus[0].buttons).startswith("▶")


def test_trajectory_lines_join_each_units_layers():
    proj = _proj(3, 4)
    line = trajectory_figure(proj, _meta(4)).data[0]
    assert line.mode == "lines" and isinstance(line, go.Scattergl)
    y = untyped(line.y).astype(float)
    assert len(y) == 4 * 4 and np.isnan(y[3::4]).all()  # 3 layers + a break per unit
    np.testing.assert_allclose(y[:3], proj.coords[:, 0, 1])


def test_3d_uses_scatter3d():
    fig = trajectory_figure(_proj(k=3), _meta(10), "group")
    assert all(isinstance(t, go.Scatter3d) for t in fig.data)
    assert fig.layout.scene.zaxis.range is not None


def test_many_categories_fold_into_other_without_dropping_points():
    n = 40
    fig = trajectory_figure(_proj(2, n), _meta(n, tokens=[f"w{i}" for i in range(n)]), "token")
    m = _markers(fig)
    assert len(m) == 13 and m[-1].name == "other (28 values)"
    assert sum(len(untyped(t.x)) for t in m) == n


def test_colour_by_layer_shows_all_layers_without_frames():
    fig = trajectory_figure(_proj(4, 5), _meta(5), "layer")
    assert len(_markers(fig)) == 4 and not fig.frames
    assert sum(len(untyped(t.x)) for t in _markers(fig)) == 20


def test_position_is_a_continuous_scale():
    fig = trajectory_figure(_proj(2, 8), _meta(8), "position")
    (m,) = _markers(fig)
    assert list(untyped(m.marker.color)) == list(np.arange(8) % 4) and m.marker.showscale


def test_hundred_thousand_points_are_all_drawn():
    proj = Projection(np.zeros((10, 10_000, 2), np.float32), tuple(range(10)), "pca", None, "")
    meta = _meta(10_000)
    fig = trajectory_figure(proj, meta, "label", show_lines=False)
    assert sum(len(untyped(t.x)) for t in _markers(fig)) == 10_000 and len(fig.frames) == 10
    assert "100,000 points" in fig.layout.title.text


def test_bad_meta_or_colour():
    with pytest.raises(ValueError, match="one row per unit"):
        trajectory_figure(_proj(), _meta(9))
    with pytest.raises(ValueError, match="unknown colouring"):
        trajectory_figure(_proj(), _meta(10), "mood")


def test_categories_keeps_the_most_frequent():
    names, codes = categories(pd.Series(["a"] * 5 + ["b"] * 3 + ["c"]), max_named=2)
    assert names == ["a", "b", "other (1 values)"] and list(codes) == [0] * 5 + [1] * 3 + [2]


def test_silhouette_figure():
    fig = silhouette_figure([0, 1, 2], [0.0, 0.4, 0.8])
    assert list(fig.data[0].y) == [0.0, 0.4, 0.8] and fig.layout.xaxis.title.text == "layer"
    fig = silhouette_figure([0, 1], [0.0, 0.4], agreement=[0.5, 0.9], chance=0.5)
    assert [t.name for t in fig.data] == ["silhouette", "same-label neighbours"]
    assert any(s.y0 == 0.5 for s in fig.layout.shapes)


def test_each_frame_retitles_the_figure_so_the_title_follows_the_slider():
    fig = trajectory_figure(_proj(n_layers=3), _meta(10), "label", layer=2)
    assert "markers: layer 2 of 3" in fig.layout.title.text
    titles = [f.layout.title.text for f in fig.frames]
    assert [t.split("markers: ")[1] for t in titles] == [f"layer {k} of 3)" for k in range(3)]


def test_3d_lines_are_drawn_visibly_and_the_legend_leaves_the_colour_bar_alone():
    fig = trajectory_figure(_proj(n_layers=3, k=3), _meta(10), "position", layer=1)
    line = fig.data[0]
    assert line.type == "scatter3d" and line.mode == "lines" and line.line.width >= 2
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0
    assert fig.data[1].marker.showscale  # the colour bar stays on the right


def test_a_highlighted_prompt_is_its_whole_path_in_black_and_frames_leave_it():
    proj, meta = _proj(n_layers=4, n_units=6), _meta(6)
    fig = trajectory_figure(proj, meta, "label")
    n = len(fig.data)
    highlight_unit(fig, proj, [3], "this prompt: <b>x</b>")
    tr = fig.data[-1]
    assert len(fig.data) == n + 1 and tr.line.color == "black"
    np.testing.assert_allclose(np.c_[untyped(tr.x), untyped(tr.y)], proj.coords[:, 3, :])
    assert "<b>" not in tr.name and "<b>" not in tr.hovertemplate  # user text is inert
    assert all(n not in (f.traces or ()) for f in fig.frames)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("colour", ["label", "group", "layer", "position", "token"])
def test_fast_build_gives_the_json_plotly_validation_would(k, colour):
    """Traces are built as plain dicts without plotly's validation (speed): the figure's JSON
    must equal a fully validated rebuild's, and later changes are validated again."""
    import json

    proj, meta = _proj(4, 12, k), _meta(12, labels=("a<b>", "b & c"))
    meta.loc[::5, "label"] = None
    meta.loc[::3, "pos"] = -1
    fig = trajectory_figure(proj, meta, colour)
    validated = go.Figure(fig.to_dict())
    assert json.loads(fig.to_json()) == json.loads(validated.to_json())
    with pytest.raises(ValueError):
        fig.update_layout(height="tall")
    with pytest.raises(ValueError):
        fig.data[-1].marker.size = "big"


def test_feature_activation_is_a_continuous_scale():
    acts = np.linspace(0, 3, 8)
    fig = trajectory_figure(_proj(2, 8), _meta(8).assign(feature=acts), "feature")
    (m,) = _markers(fig)
    np.testing.assert_allclose(untyped(m.marker.color), acts)
    assert m.marker.showscale and m.marker.colorbar.title.text == "feature"
