"""Attribution figures from a hand-made result: the bars carry the components, the heatmap the
heads, the graph one node per token × layer (clickable) and its route in red; strings inert."""

import numpy as np

from backend.analysis.attribution import flow_graph
from backend.figures.attribution import (
    ROUTE,
    components_figure,
    graph_figure,
    heads_figure,
)
from backend.views import attribution as V
from tests.backend.figures._strings import BOLD, LINK, assert_inert


def _result():
    resid = np.array([[0.6, 0.5, 0.4], [0.7, 0.2, 0.5]])
    attn = np.zeros((2, 3, 3))
    attn[0, 2, 1], attn[1, 2, 0] = 0.5, 0.3
    return V.Result(
        request=V.Request(model="m", prompt="a b c"),
        tokens=["a", BOLD, LINK],
        position=2,
        answer=BOLD,
        against="y",
        logit_diff=1.5,
        embed=0.1,
        attn=np.array([0.2, 0.4]),
        mlp=np.array([0.3, 0.25]),
        bias={"final norm bias": 0.25},
        heads=np.array([[0.1, 0.1], [0.5, -0.1]]),
        head_bias=np.zeros(2),
        graph=flow_graph(resid, attn, position=2, threshold=0.1),
    )


def test_bars_heads_and_graph():
    res = _result()
    assert res.total == 1.5
    fig = components_figure(res)
    ys = {t.name: list(t.y) for t in fig.data}
    assert ys["attention"] == [0.2, 0.4] and ys["MLP"] == [0.3, 0.25]
    assert ys["embeddings"] == [0.1] and ys["bias terms"] == [0.25]
    np.testing.assert_allclose(heads_figure(res).data[0].z, res.heads)
    g = graph_figure(res)
    nodes = next(t for t in g.data if t.name == "nodes")
    assert len(nodes.customdata) == 3 * 3
    red = [c for c, xy in zip(nodes.marker.color, nodes.customdata) if c == ROUTE]
    assert len(red) == len(res.graph.route) and (2, 2) in res.graph.route
    assert any(t.line.color == ROUTE for t in g.data if t.mode == "lines")
    for f in (fig, heads_figure(res), g):
        assert_inert(f)
    d = res.to_dict()
    assert d["target"] == {"answer": BOLD, "against": "y", "logit_diff": 1.5}
    assert len(d["graph"]["nodes"]) == 9 and d["graph"]["edges"]
