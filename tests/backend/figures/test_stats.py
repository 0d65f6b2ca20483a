import numpy as np

from backend.analysis.stats import layer_stats
from backend.figures.stats import stats_figure
from tests.backend.figures._strings import BOLD, ESC_BOLD, ESC_LINK, LINK, MD, assert_inert


def _stats(seed=0, n_units=20):
    """Three layers; layer 2 has a massive activation (+100 at unit 7, dim 3)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, n_units, 8))
    x[1] *= 3
    x[2, 7, 3] = 100.0
    return layer_stats(x, layers=[0, 4, 8]), x


def _names(n):
    return [f"tok{i} (prompt {i // 5})" for i in range(n)]


def test_four_panels_with_one_point_per_layer():
    st, _ = _stats()
    fig = stats_figure(st, _names(20))
    assert [a.text for a in fig.layout.annotations] == [
        "norm of the residual stream (median, 5–95%)",
        "massive activations: max |value| / median |value|",
        "effective rank",
        "anisotropy (mean pairwise cosine)",
    ]
    band, norm, massive, rank, aniso = fig.data
    assert band.fill == "toself" and band.hoverinfo == "skip"
    q = st.norm_quantiles
    np.testing.assert_allclose(band.y, [*q[:, 4], *q[::-1, 0]])
    np.testing.assert_allclose(norm.y, q[:, 2])
    np.testing.assert_allclose(massive.y, st.massive_ratio)
    np.testing.assert_allclose(rank.y, st.effective_rank)
    np.testing.assert_allclose(aniso.y, st.anisotropy)
    for t in (norm, massive, rank, aniso):
        assert list(t.x) == [0, 4, 8]
    assert fig.layout.yaxis2.type == "log"
    assert [fig.layout[f"xaxis{i}"].title.text for i in ("", 2, 3, 4)] == ["layer"] * 4
    assert fig.layout.yaxis4.range[1] == 1


def test_norm_hover_names_the_longest_unit_of_each_layer():
    st, x = _stats()
    names = _names(20)
    hover = stats_figure(st, names).data[1].hovertext
    assert len(hover) == 3
    for li, (layer, h) in enumerate(zip([0, 4, 8], hover)):
        longest = int(np.linalg.norm(x[li], axis=1).argmax())
        assert h.startswith(f"layer {layer}: median {st.norm_quantiles[li, 2]:.2f} ")
        assert h.endswith(f"longest: {names[longest]}")
    assert "longest: tok7 (prompt 1)" in hover[2]


def test_massive_hover_lists_the_top_entries_with_their_unit():
    st, _ = _stats()
    names = _names(20)
    hover = stats_figure(st, names).data[2].hovertext
    assert len(hover) == 3
    head, *rows = hover[2].split("<br>")
    assert head.startswith("layer 8: max |value| 100.0 = ")
    assert f"{st.massive_ratio[2]:.0f}× the median {st.median_abs[2]:.3f}" in head
    assert rows[0] == "+100.0 at dim 3, tok7 (prompt 1)"
    assert len(rows) == st.top_values.shape[1] == 5
    for v, d, u, row in zip(
        st.top_values[0], st.top_dims[0], st.top_units[0], hover[0].split("<br>")[1:]
    ):
        assert row == f"{v:+.1f} at dim {d}, {names[u]}"


def test_negative_anisotropy_stays_in_view():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(1, 1, 6))
    x = np.concatenate([v, -v]).reshape(1, 2, 6)  # two opposite vectors: cosine -1
    st = layer_stats(np.repeat(x, 2, 0))
    assert st.anisotropy.min() < -0.9
    lo, hi = stats_figure(st, ["a", "b"]).layout.yaxis4.range
    assert lo <= st.anisotropy.min() - 0.05 and hi == 1


def test_unit_names_are_escaped():
    st, _ = _stats()
    names = [LINK, BOLD, MD] * 6 + [LINK, BOLD]
    assert names[7] == BOLD
    fig = stats_figure(st, names)
    assert_inert(fig)
    assert fig.data[1].hovertext[2].endswith(f"longest: {ESC_BOLD}")
    assert fig.data[2].hovertext[2].split("<br>")[1] == f"+100.0 at dim 3, {ESC_BOLD}"
    shown = " ".join(fig.data[1].hovertext) + " ".join(fig.data[2].hovertext)
    assert ESC_LINK in shown and MD in shown
