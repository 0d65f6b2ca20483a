"""Exports open: offline HTML parses, PNG has the asked size, Parquet reads back equal."""

import io
import shutil
from html.parser import HTMLParser

import pandas as pd
import plotly.graph_objects as go
import pytest

from backend import exports


def fig():
    return go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2]))


def test_html_is_self_contained_and_parses():
    html = exports.figure_html(fig()).decode()
    HTMLParser().feed(html)
    assert len(html) > 1_000_000  # plotly.js embedded, not fetched
    assert '<script src="http' not in html.replace("'", '"')  # works offline


def test_report_has_settings_model_versions_and_figures():
    html = exports.report_html(
        "t",
        [("a", fig()), ("b", fig())],
        {"model": "demo"},
        {"ref": "demo", "model_id": "abc", "n_layers": 4},
    ).decode()
    HTMLParser().feed(html)
    assert "abc" in html and "torch" in html and html.count("Plotly.newPlot") == 2


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
