import numpy as np
import plotly.graph_objects as go
import pytest

from backend.analysis.probes import confusion, run_probes
from backend.figures.probes import confusion_figure, probe_figure, score_figure
from tests.backend.figures._strings import BOLD, ESC_BOLD, ESC_LINK, EVIL, LINK, MD, assert_inert


def _probe(classes=("apple", "banana"), signal=(0.0, 1.0, 4.0), n_prompts=30, seed=0):
    """Layer l shifts dimension 0 by signal[l] * class index: noise, weak, clear."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_prompts) % len(classes), 2)
    groups = np.repeat(np.arange(n_prompts), 2)
    x = rng.normal(size=(len(signal), len(y), 6))
    x[:, :, 0] += np.asarray(signal)[:, None] * y
    return run_probes(x, np.array(classes)[y], groups, folds=3, method="ridge")  # no LBFGS warm-up


def _by_name(fig):
    return {t.name: t for t in fig.data}


def test_probe_figure_shows_accuracy_band_control_and_majority():
    res = _probe()
    fig = probe_figure(res)
    t = _by_name(fig)
    assert len(fig.data) == 4
    assert {"probe accuracy", "shuffled labels", "majority class (0.50)"} <= set(t)
    np.testing.assert_allclose(t["probe accuracy"].y, res.accuracy)
    np.testing.assert_allclose(t["shuffled labels"].y, res.control)
    assert list(t["probe accuracy"].x) == [0, 1, 2]
    assert list(t["majority class (0.50)"].y) == [0.5, 0.5]
    band = fig.data[0]
    assert band.fill == "toself" and not band.showlegend and band.hoverinfo == "skip"
    assert list(band.x) == [0, 1, 2, 2, 1, 0]
    np.testing.assert_allclose(band.y, [*res.ci_high, *res.ci_low[::-1]])
    assert fig.layout.xaxis.title.text == "layer"
    assert fig.layout.yaxis.title.text == "accuracy (out of fold)"
    assert tuple(fig.layout.yaxis.range) == (0, 1.04)
    assert fig.layout.title.text.startswith("Linear probe accuracy per layer")


def test_probe_hover_gives_each_layer_its_own_numbers():
    res = _probe()
    hover = _by_name(probe_figure(res))["probe accuracy"].hovertext
    assert len(hover) == 3
    for li, h in enumerate(hover):
        a, c = res.accuracy[li], res.control[li]
        assert h.startswith(f"layer {li}<br>")
        assert f"accuracy {a:.3f} [{res.ci_low[li]:.3f}, {res.ci_high[li]:.3f}]" in h
        assert f"macro-F1 {res.macro_f1[li]:.3f}" in h
        assert f"shuffled control {c:.3f}" in h
        assert f"selectivity {a - c:+.3f}" in h
    assert len(set(hover)) == 3


def test_first_decodable_layer_is_marked_and_absent_without_signal():
    res = _probe()
    first = res.first_decodable()
    assert first in (1, 2)  # the signal is there from layer 1 and clearer at layer 2
    fig = probe_figure(res)
    (line,) = fig.layout.shapes
    assert line.x0 == line.x1 == first
    assert [a.text for a in fig.layout.annotations] == [f"decodable from layer {first}"]
    noise = _probe(signal=(0.0, 0.0))
    assert noise.first_decodable() is None
    fig = probe_figure(noise)
    assert not fig.layout.shapes and not fig.layout.annotations


def test_twin_adds_its_band_and_curve_with_its_own_hover():
    res, twin = _probe(), _probe(signal=(0.0, 0.0, 0.5), seed=1)
    fig = probe_figure(res, twin, twin_name="random init", title="My probe")
    assert len(fig.data) == 6
    t = _by_name(fig)["same probe on random init"]
    np.testing.assert_allclose(t.y, twin.accuracy)
    assert f"accuracy {twin.accuracy[2]:.3f}" in t.hovertext[2]
    assert fig.layout.title.text == "My probe"


def test_confusion_counts_every_unit_and_shares_per_true_class():
    res = _probe(("a", "b", "c"))
    fig = confusion_figure(res, 1)
    (h,) = fig.data
    counts = np.asarray(h.text)
    np.testing.assert_array_equal(counts, confusion(res, 1))
    assert counts.sum() == 60 and (counts.sum(1) == 20).all()
    np.testing.assert_allclose(np.asarray(h.z).sum(1), 1.0)
    np.testing.assert_allclose(np.asarray(h.z), counts / 20)
    assert (h.zmin, h.zmax) == (0, 1)
    assert list(h.x) == list(h.y) == ["a", "b", "c"]
    assert fig.layout.title.text == "Confusion at layer 1 (out of fold)"
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("predicted", "true")
    assert "units" in h.hovertemplate and "true %{y}" in h.hovertemplate


def test_confusion_of_another_layer_differs():
    res = _probe(("a", "b", "c"))
    noisy, clear = (np.asarray(confusion_figure(res, li).data[0].text) for li in (0, 2))
    assert np.trace(clear) > np.trace(noisy)


@pytest.mark.parametrize(
    "classes, boundary", [(("x", "y"), "decision boundary"), (("x", "y", "z"), "chance")]
)
def test_score_violins_one_per_class_with_every_unit(classes, boundary):
    res = _probe(classes)
    fig = score_figure(res, 2)
    assert all(isinstance(t, go.Violin) for t in fig.data) and len(fig.data) == len(classes)
    n = 60 // len(classes)
    assert [t.name for t in fig.data] == [f"{c} (n={n})" for c in classes]
    for c, t in enumerate(fig.data):
        np.testing.assert_allclose(t.y, res.scores[2, res.y == c, c])
    (line,) = fig.layout.shapes
    assert line.y0 == pytest.approx(1 / len(classes))
    assert fig.layout.annotations[0].text == boundary
    assert fig.layout.title.text == "Score of the true class, layer 2"


def test_class_names_twin_name_and_title_are_escaped():
    res = _probe(EVIL)
    assert res.classes == tuple(sorted(EVIL))
    figs = [
        probe_figure(res, res, twin_name=BOLD, title=LINK),
        confusion_figure(res, 1),
        score_figure(res, 1),
    ]
    for f in figs:
        assert_inert(f)
    main, conf, score = figs
    assert main.layout.title.text == ESC_LINK
    assert f"same probe on {ESC_BOLD}" in {t.name for t in main.data}
    assert set(conf.data[0].x) == set(conf.data[0].y) == {ESC_LINK, ESC_BOLD, MD}
    assert {t.name.split(" (n=")[0] for t in score.data} == {ESC_LINK, ESC_BOLD, MD}
