"""Presenter styling of a figure (pure: no page run)."""

import plotly.graph_objects as go

from pages import _ui


def test_presenter_styles_axes_titles_and_frames_for_a_projector():
    long = "400 units × 5 layers = 2,000 points (pca, standardised; markers: layer 4 of 5)"
    fig = go.Figure(go.Scatter(x=[1, 2], y=[1, 2], mode="markers"), layout={"title": long})
    fig.frames = [go.Frame(name="0", layout={"title": {"text": long}})]
    _ui.present_figure(fig)
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) >= 2 and all(len(x) <= _ui.TITLE_WRAP for x in lines)
    assert " ".join(lines) == long  # nothing lost, only broken at spaces
    assert fig.frames[0].layout.title.text == fig.layout.title.text
    assert fig.layout.margin.t >= 40 + 34 * len(lines)
    assert fig.layout.xaxis.tickfont.size == 18 and fig.layout.yaxis.title.font.size == 20
    assert fig.data[0].marker.size >= 10
    short = _ui.present_figure(go.Figure(layout={"title": "Linear CKA"}))
    assert short.layout.title.text == "Linear CKA"
