"""Attention heads figure: top attended tokens on hover, clickable cells, inert tokens."""

import numpy as np

from tests.backend.figures._strings import BOLD, assert_inert


def test_attention_heads_hover_top_tokens_and_cells_are_clickable():
    from backend.analysis.attention import top_keys
    from backend.figures.attention import heads_figure
    from backend.views.attention import Request as AQ
    from backend.views.attention import Result as AR

    rng = np.random.default_rng(0)
    att = rng.random((2, 3, 4, 4)) * np.tril(np.ones((4, 4)))
    att /= att.sum(-1, keepdims=True)
    res = AR(AQ(model="m", prompt="x"), ["<s>", BOLD, "b", "c"], att, att[..., 1:, 0].mean(-1),
             np.zeros((2, 3)))  # fmt: skip
    idx, w = top_keys(att, 2)
    want = att[..., 1:, :].mean(-2)
    np.testing.assert_allclose(w[1, 2], np.sort(want[1, 2])[::-1][:2])
    assert list(idx[1, 2]) == list(np.argsort(-want[1, 2])[:2])
    fig = heads_figure(res)
    cells = [t for t in fig.data if t.type == "scatter"]
    assert len(cells) == 2 and len(cells[0].customdata) == 6
    i = [list(c) for c in cells[0].customdata].index([2, 1])
    top = top_keys(att, 3)[0][1, 1]
    assert f"{top[0]}: " in cells[0].text[i] and "most attended" in cells[0].text[i]
    assert_inert(fig)
