"""Exports open: offline HTML parses, PNG has the asked size, Parquet reads back equal."""

import io
import json
import re
import shutil

import pandas as pd
import plotly.graph_objects as go
import pytest

from backend import exports


def fig():
    return go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]))


def plotted_figures(html: str) -> list[dict]:
    """The data of every ``Plotly.newPlot(id, data, layout, config)`` call in the page."""
    out, dec = [], json.JSONDecoder()
    for m in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", html):
        data, end = dec.raw_decode(html, m.end())
        layout, _ = dec.raw_decode(html, html.index("{", end))
        out.append({"data": data, "layout": layout})
    return out


def test_html_is_self_contained_and_holds_the_figure():
    html = exports.figure_html(fig()).decode()
    figs = plotted_figures(html)
    assert len(figs) == 1 and figs[0]["data"][0]["x"] == [1, 2, 3]
    assert figs[0]["data"][0]["y"] == [3, 1, 2]
    assert len(html) > 1_000_000  # plotly.js embedded, not fetched
    assert '<script src="http' not in html.replace("'", '"')  # works offline


def test_report_has_settings_model_versions_and_figures():
    html = exports.report_html(
        "t",
        [("a", fig()), ("b", fig())],
        {"model": "demo"},
        {"ref": "demo", "model_id": "abc", "n_layers": 4},
    ).decode()
    assert "abc" in html and "torch" in html
    figs = plotted_figures(html)
    assert len(figs) == 2 and all(f["data"][0]["x"] == [1, 2, 3] for f in figs)


def test_parquet_and_csv_round_trip():
    df = pd.DataFrame({"layer": [0, 1], "acc": [0.5, 0.9], "label": ["a", "b"]})
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(exports.table_parquet(df))), df)
    assert pd.read_csv(io.BytesIO(exports.table_csv(df)))["acc"].tolist() == [0.5, 0.9]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="PNG export needs Chromium")
def test_png_has_the_expected_size():
    from PIL import Image

    png = exports.figure_png(fig(), width=640, height=400)
    assert Image.open(io.BytesIO(png)).size == (640, 400)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="image export needs Chromium")
def test_static_lens_export_keeps_token_and_layer_tick_labels():
    """The exported image (same kaleido path as the PNG) draws every token on the x axis and
    every layer on the y axis, at the figure's own width for a long prompt."""
    from backend.figures.lens import lens_figure
    from tests.backend.figures.test_lens import WORDS, _lens

    tokens = [f" w{i}" for i in range(40)]
    fig = lens_figure(_lens(n_layers=7, n_pos=40), tokens, WORDS)
    svg = exports.figure_image(fig, "svg").decode()
    assert 'width="2400"' in svg  # 60 px per token, not squeezed into 1200
    xt = re.findall(r'class="xtick"><text[^>]*>([^<]*)<', svg)
    yt = re.findall(r'class="ytick"><text[^>]*>([^<]*)<', svg)
    assert xt == [t.strip() for t in tokens]
    assert yt == [str(i) for i in range(7)]


def test_report_escapes_captions_and_keeps_figure_order():
    html = exports.report_html(
        "<b>t</b>", [("<script>x</script>", fig()), ("second", go.Figure())], {}
    ).decode()
    assert "<script>x</script>" not in html and "&lt;script&gt;x" in html
    assert html.index("&lt;script&gt;x") < html.index("second")
    assert len(plotted_figures(html)) == 2


def test_png_export_grows_margins_to_fit_tick_labels_on_a_copy(monkeypatch):
    import plotly.graph_objects as go

    from backend import exports

    fig = go.Figure(go.Heatmap(z=[[1, 2]], y=["a very long prompt label " * 3]))
    fig.update_layout(margin={"l": 10}, height=300)
    drawn = {}

    def to_image(self, format, width, height, scale):
        drawn.update(fig=self, size=(width, height))
        return b"png"

    monkeypatch.setattr(go.Figure, "to_image", to_image)
    assert exports.figure_png(fig) == b"png" and drawn["size"] == (1200, 300)
    assert drawn["fig"].layout.yaxis.automargin and drawn["fig"].layout.xaxis.automargin
    assert drawn["fig"] is not fig and fig.layout.yaxis.automargin is None  # untouched
