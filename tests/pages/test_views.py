"""Every view renders on the demo model without exception, and every tour story reaches it."""

import pytest

from backend import models
from backend.tour import STORIES
from tests.pages.conftest import open_page, using_db

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model"),
]


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    from backend.cli import main

    db = tmp_path_factory.mktemp("views") / "v.duckdb"
    for model, set_name in (
        ("demo", "agreement"),
        ("demo-untrained", "agreement"),
        ("demo", "topic"),
        ("demo-seed1", "topic"),
        ("demo", "sentiment"),
    ):
        assert (
            main(["extract", "--db", str(db), "--model", model, "--set", set_name, "--json"]) == 0
        )
    assert (
        main(
            [
                "generate",
                "--db",
                str(db),
                "--set",
                "ambiguity",
                "--samples",
                "4",
                "--max-new-tokens",
                "4",
                "--json",
            ]
        )
        == 0
    )
    return db


@pytest.fixture
def views_env(demo_db, monkeypatch):
    yield from using_db(demo_db, monkeypatch)


@pytest.mark.parametrize(
    "page,query",
    [
        ("trajectories", {"method": "pca"}),
        ("trajectories", {"method": "aligned", "unit": "token"}),
        ("similarity", {"kind": "layer-cka"}),
        ("similarity", {"kind": "prompt", "layer": "3"}),
        ("similarity", {"kind": "token"}),
        ("similarity", {"kind": "run", "step": "2"}),
        ("probes", {}),
        ("lens", {}),
        ("stats", {}),
        ("prompt", {}),
        ("library", {}),
    ],
)
def test_view_renders(views_env, page, query):
    at = open_page(page, {"model": "demo", "set": "agreement", **query})
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_trajectory_figure_counts_points(views_env):
    at = open_page("trajectories", {"model": "demo", "set": "agreement"})
    assert any("400 prompt units × 5 layers = 2,000 points" in c.value for c in at.caption)


def test_generation_page_shows_samples(views_env):
    at = open_page("generation", {"model": "demo", "set": "ambiguity"})
    assert not at.exception
    at.number_input(key="gen_n").set_value(4).run()
    at.number_input(key="gen_new").set_value(4).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Consistency" in c.value for c in at.caption)
    heads = [h.value for h in at.subheader]
    assert any(h.startswith("Across the set: 200 of 200") for h in heads), heads
    assert any(h.startswith("Outcome separation") for h in heads), heads
    assert not at.error, [e.value for e in at.error]
    charts = len(at.get("plotly_chart"))
    assert any("branch probabilities" in c.value or "not stored" in c.value for c in at.caption)
    at.button(key="gen_strip").click().run()  # the strip loads the model on the click only
    assert not at.exception, [e.message for e in at.exception]
    keys = [c.key for c in at.get("plotly_chart")]
    assert len(keys) == charts + 2 and {"gen_strip_fig", "gen_tree_p"} <= set(keys), keys


@pytest.mark.parametrize("story", STORIES, ids=lambda s: s.key)
def test_tour_story_reaches_its_view(views_env, story):
    """The story's link opens its view with the story's Notice above it."""
    at = open_page(story.page, {**story.params, "story": story.key})
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    text = " ".join(m.value for m in at.markdown)
    assert f"**Notice:** {story.notice}" in text and story.title in text


def test_unknown_story_key_shows_no_banner(views_env):
    at = open_page("stats", {"model": "demo", "set": "agreement", "story": "<b>nope</b>"})
    assert not at.exception and not at.error
    assert not any("Notice:" in m.value for m in at.markdown)


def test_permalink_round_trips_to_the_same_figure(views_env):
    q = {
        "model": "demo",
        "set": "agreement",
        "method": "aligned",
        "dims": "3",
        "color": "group",
        "layers": "1:4",
        "unit": "prompt",
    }
    a = open_page("trajectories", q)
    assert not a.exception
    assert a.selectbox(key="qp_method").value == "aligned"
    assert a.radio(key="qp_dims").value == 3
    state = {k: a.query_params[k] for k in q}
    assert state == {k: [v] if isinstance(a.query_params[k], list) else v for k, v in q.items()}
    b = open_page("trajectories", {k: v if isinstance(v, str) else v[0] for k, v in state.items()})
    fa, fb = a.get("plotly_chart")[0].proto.spec, b.get("plotly_chart")[0].proto.spec
    assert fa == fb
