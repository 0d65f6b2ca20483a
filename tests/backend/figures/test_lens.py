import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from backend.analysis.lens import LensResult, LensSummary, logit_lens
from backend.figures.lens import lens_curves, lens_figure, summary_figure
from tests.backend.figures._strings import BOLD, ESC_BOLD, ESC_LINK, LINK, MD, assert_inert

WORDS = ["cat", "dog", "mat", "sat", "on", "the", "a", "ran"]


def _lens(n_layers=3, n_pos=4, k=3, seed=0):
    """Hand-made readouts: distinct top-k ids per cell, probabilities sorted, commitment per
    position, ranks and KL that differ from cell to cell."""
    rng = np.random.default_rng(seed)
    ids = np.stack(
        [[rng.permutation(len(WORDS))[:k] for _ in range(n_pos)] for _ in range(n_layers)]
    )
    probs = np.sort(rng.dirichlet(np.ones(len(WORDS)), size=(n_layers, n_pos))[..., :k], -1)
    probs = probs[..., ::-1]
    kl = rng.uniform(0.1, 5, size=(n_layers, n_pos))
    kl[-1] = 0
    rank = rng.integers(0, 50, size=(n_layers, n_pos))
    rank[-1] = 0
    return LensResult(
        tuple(range(n_layers)),
        ids,
        probs,
        kl,
        rng.uniform(0, 3, size=(n_layers, n_pos)),
        rank,
        rng.integers(0, n_layers, size=n_pos),
    )


def _heat(fig):
    (h,) = [t for t in fig.data if isinstance(t, go.Heatmap)]
    return h


def test_grid_has_a_cell_per_layer_and_position_with_the_top_guess():
    res = _lens()
    fig = lens_figure(res, ["The", " cat", " sat", " on"], WORDS)
    h = _heat(fig)
    np.testing.assert_allclose(h.z, res.top_probs[..., 0])
    assert (h.zmin, h.zmax) == (0, 1)
    assert list(h.y) == [0, 1, 2] and list(h.x) == [0, 1, 2, 3]
    assert np.asarray(h.text).tolist() == [[WORDS[i] for i in row] for row in res.top_ids[..., 0]]
    assert list(fig.layout.xaxis.ticktext) == ["The", "cat", "sat", "on"]
    assert list(fig.layout.xaxis.tickvals) == [0, 1, 2, 3]
    assert fig.layout.yaxis.title.text == "layer"
    assert fig.layout.xaxis.title.text.startswith("input token")
    assert "Logit lens" in fig.layout.title.text


def test_hover_lists_top_k_with_probabilities_kl_and_rank_of_that_cell():
    res = _lens()
    tokens = ["The", " cat", " sat", " on"]
    hover = np.asarray(_heat(lens_figure(res, tokens, WORDS)).customdata)
    assert hover.shape == (3, 4)
    for li in range(3):
        for p in range(4):
            h = hover[li, p]
            assert h.startswith(f"layer {li} · after {p}:{tokens[p]!r}<br>")
            lines = h.split("<br>")
            assert lines[1:4] == [
                f"{WORDS[i]!r} {pr:.3f}" for i, pr in zip(res.top_ids[li, p], res.top_probs[li, p])
            ]
            assert f"KL to final {res.kl_to_final[li, p]:.2f}" in lines[4]
            assert lines[4].endswith(f"final top-1 rank {res.final_rank[li, p]}")


def test_names_may_be_a_mapping_of_only_the_ids_shown():
    res = _lens()
    shown = {int(i): WORDS[i] for i in np.unique(res.top_ids)}
    fig = lens_figure(res, list("abcd"), shown)
    assert np.asarray(_heat(fig).text)[0, 0] == WORDS[res.top_ids[0, 0, 0]]


def test_commitment_is_a_red_bar_under_each_positions_commit_layer():
    res = _lens(n_layers=4, n_pos=5)
    fig = lens_figure(res, list("abcde"), WORDS)
    assert len(fig.layout.shapes) == 5
    for p, s in enumerate(fig.layout.shapes):
        assert (s.x0, s.x1) == (p - 0.5, p + 0.5)
        assert s.y0 == s.y1 == res.commitment[p] - 0.5


def test_long_and_blank_tokens_are_shortened_not_dropped():
    res = _lens(n_pos=2)
    fig = lens_figure(res, ["abcdefghijkl", " "], ["x" * 30] * len(WORDS))
    assert list(fig.layout.xaxis.ticktext) == ["abcdefg…", "' '"]
    assert np.asarray(_heat(fig).text)[0, 0] == "x" * 9 + "…"
    assert "'" + "x" * 30 + "'" in np.asarray(_heat(fig).customdata)[0, 0]


def test_tokens_and_token_names_are_escaped_whole():
    res = _lens(n_pos=3)
    names = [BOLD, LINK, MD] * 3
    fig = lens_figure(res, [BOLD, LINK, MD], names)
    assert_inert(fig)
    # shortened first, then escaped: "<b>b</b>" has 8 characters and is shown whole
    assert list(fig.layout.xaxis.ticktext) == [ESC_BOLD, "&lt;a href…", "[x](htt…"]
    cell = {BOLD: ESC_BOLD, LINK: '&lt;a href="…', MD: "[x](http:…"}
    text = np.asarray(_heat(fig).text)
    assert text.tolist() == [[cell[names[i]] for i in row] for row in res.top_ids[..., 0]]
    hover = np.asarray(_heat(fig).customdata)
    assert f"after 0:'{ESC_BOLD}'" in hover[0, 0] and f"after 1:'{ESC_LINK}'" in hover[0, 1]
    esc = {BOLD: ESC_BOLD, LINK: ESC_LINK, MD: MD}
    for li in range(3):
        for p in range(3):
            for i, pr in zip(res.top_ids[li, p], res.top_probs[li, p]):
                assert f"'{esc[names[i]]}' {pr:.3f}" in hover[li, p]


def test_curves_over_all_positions_and_one_chosen_position():
    res = _lens()
    fig = lens_curves(res)
    assert len(fig.data) == 3
    np.testing.assert_allclose(fig.data[0].y, res.kl_to_final.mean(1))
    np.testing.assert_allclose(fig.data[1].y, res.entropy.mean(1))
    np.testing.assert_allclose(fig.data[2].y, np.median(res.final_rank + 1, 1))
    assert [a.text for a in fig.layout.annotations] == [
        "KL to final (nats)",
        "entropy (nats)",
        "rank of the final top-1 (1 = top)",
    ]
    assert fig.layout.yaxis3.type == "log"
    assert [fig.layout[f"xaxis{i}"].title.text for i in ("", 2, 3)] == ["layer"] * 3
    fig = lens_curves(res, position=2)
    assert len(fig.data) == 6
    chosen = [t for t in fig.data if t.name == "position 2"]
    assert len(chosen) == 3 and sum(bool(t.showlegend) for t in chosen) == 1
    np.testing.assert_allclose(chosen[0].y, res.kl_to_final[:, 2])
    np.testing.assert_allclose(chosen[2].y, res.final_rank[:, 2] + 1)
    assert sum(bool(t.showlegend) for t in fig.data if t.name == "all positions") == 1


def _summary(n_layers=4, seed=0):
    rng = np.random.default_rng(seed)
    q = np.sort(rng.uniform(0, 4, size=(n_layers, 3)), 1)
    return LensSummary(
        tuple(range(n_layers)),
        12_345,
        q[:, 1],
        q,
        rng.uniform(0, 3, n_layers),
        rng.integers(0, 9, n_layers).astype(float),
        np.linspace(0.1, 1, n_layers),
        rng.multinomial(12_345, np.ones(n_layers) / n_layers),
    )


def test_summary_shows_kl_quartiles_agreement_and_commitment_counts():
    s = _summary()
    fig = summary_figure(s, "plurals")
    assert fig.layout.title.text == "Logit lens over 12,345 positions of plurals"
    band, median, agree, bars = fig.data
    assert band.fill == "toself"
    np.testing.assert_allclose(band.y, [*s.kl_quantiles[:, 2], *s.kl_quantiles[::-1, 0]])
    np.testing.assert_allclose(median.y, s.kl_quantiles[:, 1])
    np.testing.assert_allclose(agree.y, s.agreement)
    assert isinstance(bars, go.Bar) and sum(bars.y) == 12_345
    np.testing.assert_array_equal(bars.y, s.commitment_counts)
    assert tuple(fig.layout.yaxis2.range) == (0, 1.02)
    assert summary_figure(s).layout.title.text == "Logit lens over 12,345 positions"


def test_summary_set_name_is_escaped():
    fig = summary_figure(_summary(), LINK)
    assert_inert(fig)
    assert fig.layout.title.text.endswith(f"of {ESC_LINK}")


def test_a_real_lens_draws_with_decoded_names():
    gen = torch.Generator().manual_seed(0)
    unembed = torch.nn.Linear(6, len(WORDS), bias=False)
    with torch.no_grad():
        unembed.weight.copy_(torch.randn(len(WORDS), 6, generator=gen))
    hidden = np.random.default_rng(0).normal(size=(4, 3, 6)).astype(np.float32)
    res = logit_lens(hidden, None, unembed, k=2)
    names = {int(i): WORDS[i] for i in np.unique(res.top_ids)}
    fig = lens_figure(res, ["a", "b", "c"], names)
    hover = np.asarray(_heat(fig).customdata)
    assert hover.shape == (4, 3)
    assert all("KL to final 0.00 · final top-1 rank 0" in h for h in hover[-1])
    np.testing.assert_allclose(_heat(fig).z, res.top_probs[..., 0])
    assert [s.y0 for s in fig.layout.shapes] == pytest.approx(list(res.commitment - 0.5))
