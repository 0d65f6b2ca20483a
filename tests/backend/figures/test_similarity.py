import numpy as np
import plotly.graph_objects as go

from backend.analysis.similarity import (
    SimilarityMatrix,
    layer_cka,
    layer_cosine_matrix,
    model_cka,
    pairwise_cosine,
)
from backend.figures.similarity import (
    CLICKABLE_CELLS,
    COSINE_SCALE,
    TITLES,
    cell_of,
    similarity_figure,
)
from tests.backend.figures._strings import BOLD, ESC_BOLD, ESC_LINK, LINK, MD, assert_inert


def _heat(fig):
    return fig.data[0]


def _cells(fig):
    (c,) = [t for t in fig.data if t.name == "cells"]
    return c


def test_cka_is_drawn_on_a_fixed_zero_to_one_scale():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 8))
    stack = np.stack([base + s * rng.normal(size=(30, 8)) for s in (0.0, 0.3, 1.0, 3.0)])
    m = layer_cka(stack, [0, 2, 4, 6])
    fig = similarity_figure(m)
    h = _heat(fig)
    assert isinstance(h, go.Heatmap)
    assert (h.zmin, h.zmax, h.zauto) == (0, 1, False)
    assert h.colorscale[0][1] == "#440154"  # Viridis, not the diverging cosine scale
    assert h.colorbar.title.text == "linear CKA<br>(fixed 0…1)"
    assert list(h.colorbar.tickvals) == [0, 0.25, 0.5, 0.75, 1]
    np.testing.assert_allclose(h.z, m.values)
    assert np.asarray(h.z).min() < 0.9  # the data do not fill the range: it stays fixed
    assert (
        list(fig.layout.xaxis.ticktext) == list(fig.layout.yaxis.ticktext) == ["0", "2", "4", "6"]
    )
    assert fig.layout.title.text == TITLES["layer-cka"]
    assert fig.layout.yaxis.range == (3.5, -0.5)  # first row on top
    assert h.texttemplate == "%{z:.2f}"  # 16 cells: values written in


def test_cosine_spans_minus_one_to_one_on_the_diverging_scale():
    rng = np.random.default_rng(1)
    m = pairwise_cosine(rng.normal(size=(5, 4)) + 2, [f"w{i}" for i in range(5)], "token")
    h = _heat(similarity_figure(m))
    assert (h.zmin, h.zmax) == (-1, 1)
    assert [list(c) for c in h.colorscale] == COSINE_SCALE
    assert h.colorbar.title.text == "cosine<br>(fixed -1…1)"
    assert list(h.colorbar.tickvals) == [-1, -0.5, 0, 0.5, 1]
    h = _heat(similarity_figure(layer_cosine_matrix(rng.normal(size=(3, 6, 4)), [0, 1, 2])))
    assert (h.zmin, h.zmax) == (-1, 1)


def test_every_cell_has_a_click_target_naming_its_row_and_column():
    rng = np.random.default_rng(2)
    names = ["alpha", "beta", "gamma", "delta"]
    m = pairwise_cosine(rng.normal(size=(4, 6)), names, "prompt")
    fig = similarity_figure(m, title="t", row_title="prompt", col_title="prompt")
    c = _cells(fig)
    assert len(c.x) == 16 and sorted(c.customdata) == list(range(16))
    for x, y, data, text in zip(c.x, c.y, c.customdata, c.text):
        r, k = cell_of(data, m)
        assert (r, k) == (y, x)
        assert text == f"{names[r]} × {names[k]}<br>cosine {m.values[r, k]:.3f}"
    assert _heat(fig).hoverinfo == "skip"  # the marker carries the hover
    assert fig.layout.xaxis.title.text == fig.layout.yaxis.title.text == "prompt"
    assert fig.layout.title.text == "t"


def test_ordered_matrix_is_drawn_in_order_and_clicks_map_back_to_data():
    rng = np.random.default_rng(3)
    labels = ["b", "a", "b", "a", "c"]
    names = [f"p{i}" for i in range(5)]
    m = pairwise_cosine(rng.normal(size=(5, 6)), names, "prompt", labels=labels, order="label")
    order = list(m.order)
    assert order != sorted(order)
    fig = similarity_figure(m)
    (h,) = [t for t in fig.data if isinstance(t, go.Heatmap) and t.zmin == -1]
    np.testing.assert_allclose(h.z, m.values[np.ix_(order, order)])
    assert list(fig.layout.xaxis2.ticktext) == [names[i] for i in order]
    (strip,) = [t for t in fig.data if isinstance(t, go.Heatmap) and t.showscale is False]
    assert list(strip.text[0]) == [f"label {labels[i]}" for i in order]  # sorted: a, a, b, b, c
    for data, text in zip(_cells(fig).customdata, _cells(fig).text):
        r, k = cell_of(data, m)
        assert text.startswith(f"{names[r]} × {names[k]}<br>")
        assert text.endswith(f"{m.values[r, k]:.3f}")


def test_labels_become_a_colour_strip_with_a_legend_entry_each():
    rng = np.random.default_rng(4)
    labels = ["cat", "dog", "cat", "eel", "dog", "cat"]
    m = pairwise_cosine(rng.normal(size=(6, 5)), list("abcdef"), "prompt", labels=labels)
    fig = similarity_figure(m)
    (strip,) = [t for t in fig.data if isinstance(t, go.Heatmap) and t.showscale is False]
    assert list(strip.text[0]) == [f"label {v}" for v in labels]
    legend = [t for t in fig.data if isinstance(t, go.Scatter) and t.name != "cells"]
    assert [t.name for t in legend] == ["cat", "dog", "eel"]
    assert len({t.marker.color for t in legend}) == 3
    z = list(strip.z[0])
    assert z == [["cat", "dog", "eel"].index(v) for v in labels]
    one = pairwise_cosine(rng.normal(size=(3, 5)), list("abc"), "prompt", labels=["x"] * 3)
    assert len(similarity_figure(one).data) == 2  # a single label: no strip, no legend


def test_rectangular_model_cka_keeps_every_row_and_column():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(3, 20, 6)), rng.normal(size=(5, 20, 4))
    m = model_cka(a, b, [0, 1, 2], [0, 2, 4, 6, 8])
    fig = similarity_figure(m, row_title="model A", col_title="model B")
    assert np.asarray(_heat(fig).z).shape == (3, 5)
    assert list(fig.layout.xaxis.ticktext) == ["0", "2", "4", "6", "8"]
    assert list(fig.layout.yaxis.ticktext) == ["0", "1", "2"]
    assert len(_cells(fig).x) == 15
    assert fig.layout.title.text == TITLES["model-cka"]


def test_undefined_cells_stay_blank_on_grey():
    rng = np.random.default_rng(6)
    stack = rng.normal(size=(3, 10, 4))
    stack[1] = 1.0  # every unit the same: CKA undefined
    m = layer_cka(stack, [0, 1, 2])
    fig = similarity_figure(m)
    assert np.isnan(np.asarray(_heat(fig).z, dtype=float)[1]).all()
    assert fig.layout.plot_bgcolor == "#d9d9d9"
    assert (
        similarity_figure(layer_cka(rng.normal(size=(2, 10, 4)), [0, 1])).layout.plot_bgcolor
        == "white"
    )


def test_large_matrices_keep_all_cells_but_drop_annotations_then_click_targets():
    rng = np.random.default_rng(7)
    m = pairwise_cosine(rng.normal(size=(61, 3)), [f"u{i}" for i in range(61)], "token")
    fig = similarity_figure(m)
    assert np.asarray(_heat(fig).z).shape == (61, 61)
    assert _heat(fig).texttemplate is None
    c = _cells(fig)
    assert isinstance(c, go.Scattergl) and len(c.x) == 61 * 61
    assert fig.layout.xaxis.showticklabels is False and len(fig.layout.xaxis.ticktext) == 61
    n = int(np.sqrt(CLICKABLE_CELLS)) + 1
    big = pairwise_cosine(rng.normal(size=(n, 3)), [str(i) for i in range(n)], "token")
    fig = similarity_figure(big)
    assert len(fig.data) == 1 and np.asarray(fig.data[0].z).shape == (n, n)
    assert "cosine %{z:.3f}" in fig.data[0].hovertemplate


def test_names_labels_and_titles_are_escaped():
    rng = np.random.default_rng(8)
    names, labels = [LINK, BOLD, MD], [BOLD, LINK, BOLD]
    m = pairwise_cosine(rng.normal(size=(3, 4)), names, "prompt", labels=labels)
    fig = similarity_figure(m, title=LINK, row_title=BOLD, col_title=MD)
    found = assert_inert(fig)
    assert list(fig.layout.xaxis2.ticktext) == [ESC_LINK, ESC_BOLD, MD]
    assert list(fig.layout.yaxis2.ticktext) == [ESC_LINK, ESC_BOLD, MD]
    assert fig.layout.title.text == ESC_LINK
    assert fig.layout.yaxis2.title.text == ESC_BOLD and fig.layout.xaxis2.title.text == MD
    assert {t.name for t in fig.data if t.name not in (None, "cells")} == {ESC_LINK, ESC_BOLD}
    assert f"label {ESC_LINK}" in found
    assert _cells(fig).text[1].startswith(f"{ESC_LINK} × {ESC_BOLD}<br>")
    # labels passed to the figure instead of the matrix are escaped too
    plain_m = SimilarityMatrix(m.values, ("a", "b", "c"), ("a", "b", "c"), "run", -1, 1)
    fig = similarity_figure(plain_m, labels=labels)
    assert_inert(fig)
    assert {t.name for t in fig.data if t.name not in (None, "cells")} == {ESC_LINK, ESC_BOLD}
