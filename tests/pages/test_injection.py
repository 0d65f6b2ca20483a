"""Every user-controlled string (prompt text, labels, URL values) reaches the page inert:
no link, no markdown formatting, no HTML in Plotly text."""

import html
import json
import re

import pytest

from backend import models
from tests.pages.conftest import open_page, using_db

LINK, BOLD, TAG = "[x](http://a)", "**b**", '<a href="http://evil.example/x">'
PAYLOADS = (LINK, BOLD, TAG, "<b>b</b>")
EVIL_MODEL = "[Model moved: click here](https://evil.example/login)"


@pytest.fixture(scope="module")
def inj_db(tmp_path_factory):
    from backend.cli import main

    if "demo" not in models.bundled_models():
        pytest.skip("no demo model")
    tmp = tmp_path_factory.mktemp("inj")
    rows = [
        (f"the cat {LINK} runs", LINK),
        (f"{BOLD} the dog sits", BOLD),
        (f"{TAG}click</a> <b>b</b> the cats run", LINK),
        ("the dogs sit near the mat", BOLD),
    ] * 3
    rows = [(f"{t} {i}", lab) for i, (t, lab) in enumerate(rows)]
    import pandas as pd

    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp / "inj.csv", index=False)
    db = tmp / "inj.duckdb"
    argv = ["extract", "--db", str(db), "--model", "demo", "--prompts", str(tmp / "inj.csv")]
    assert main([*argv, "--set", "inj", "--label-column", "label", "--json"]) == 0
    return db


@pytest.fixture
def env(inj_db, monkeypatch):
    yield from using_db(inj_db, monkeypatch)


def texts(at) -> list[str]:
    out = []
    for kind in (
        "markdown",
        "caption",
        "info",
        "warning",
        "error",
        "success",
        "subheader",
        "title",
        "header",
    ):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(b.label) for b in at.button]
    return out


def charts(at) -> list[str]:
    return [json.dumps(json.loads(c.proto.spec)) for c in at.get("plotly_chart")]


@pytest.mark.slow
@pytest.mark.parametrize(
    "page,query",
    [
        ("trajectories", {}),
        ("similarity", {"kind": "prompt"}),
        ("probes", {"baseline": "(none)"}),
        ("stats", {}),
        ("lens", {}),
        ("library", {}),
        ("prompt", {}),
    ],
)
def test_prompt_text_and_labels_are_inert(env, page, query):
    at = open_page(page, {"model": "demo", "set": "inj", **query})
    assert not at.exception, at.exception
    shown = texts(at)
    for s in shown:
        for p in PAYLOADS:
            assert p not in s, f"{page}: raw {p!r} in {s!r}"
    for spec in charts(at):
        for p in ("<a href", "<b>b</b>"):
            assert p not in spec, f"{page}: {p!r} in a chart"


@pytest.mark.slow
@pytest.mark.parametrize("page", ["run", "trajectories", "lens"])
def test_a_hostile_model_in_the_url_is_shown_as_text(env, page):
    at = open_page(page, {"model": EVIL_MODEL, "set": "inj"})
    assert not at.exception, at.exception
    for s in texts(at):
        assert "](https://evil" not in s, f"{page}: a link in {s!r}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "page",
    [
        "run",
        "library",
        "prompt",
        "trajectories",
        "similarity",
        "probes",
        "lens",
        "stats",
        "generation",
        "tour",
        "patching",
        "steering",
        "attention",
    ],
)
@pytest.mark.parametrize("model", ["gpt2", "demo-seed1"])
def test_opening_a_link_loads_no_model_and_starts_no_job(env, monkeypatch, page, model):
    """A permalink only reads the cache: gpt2 is not cached (and would be a download),
    demo-seed1 has no runs for the set; neither may load weights or queue a job."""
    from backend import models as M

    def refuse(*a, **k):
        raise AssertionError("a page load tried to load a model")

    monkeypatch.setattr(M, "_load_model", refuse)
    monkeypatch.setattr(M, "_hub_snapshot", refuse)
    at = open_page(
        page,
        {
            "model": model,
            "set": "inj",
            "method": "umap",
            "kind": "model-cka",
            "other": "gpt2",
            "baseline": "gpt2",
        },
    )
    assert not at.exception, at.exception
    from pages import _ui

    assert not _ui.worker().active_jobs() and not _ui.worker().recent()


# -- autolinks: remark-gfm links bare URLs found in the text after escapes are resolved ------
URL = "https://evil.example/login"
_GFM_LINKS = re.compile(
    r"(?i)(https?://|www(?=\.))[-.\w]+|[-.\w+]+@[-\w]+(\.[-\w]+)+"
)  # mdast-util-gfm-autolink-literal's two patterns


def autolinked(markdown: str) -> list[str]:
    """What Streamlit's markdown would turn into links in ``markdown``: the literal-autolink
    patterns searched in the text after backslash escapes and entities are resolved."""
    text = html.unescape(re.sub(r"\\(.)", r"\1", markdown))
    return [m.group(0) for m in _GFM_LINKS.finditer(text)]


@pytest.mark.parametrize(
    "text", [URL, f"see {URL} now", "www.evil.example", "mail me@evil.example", "HTTP://A.B"]
)
def test_md_and_html_text_leave_no_autolink(text):
    from pages import _ui

    assert autolinked(text)  # the pattern does find it in the raw text
    assert not autolinked(_ui.md(text)), _ui.md(text)
    assert not autolinked(_ui.html_text(text)), _ui.html_text(text)
    assert _ui.md(text).replace("\\", "").replace(_ui._JOIN, "") == text.replace("\\", "")


def test_csv_downloads_go_through_the_one_helper():
    import pandas as pd

    from pages import _ui

    df = pd.DataFrame({"text": ['=HYPERLINK("http://e")', "ok"], "x": [-1.5, 2.0]})
    assert _ui.csv_bytes(df).decode().splitlines()[1].startswith("\"'=HYPERLINK")


@pytest.mark.slow
@pytest.mark.parametrize("page", ["run", "library", "prompt", "trajectories", "lens", "stats"])
@pytest.mark.parametrize("param", ["model", "set", "run"])
def test_urls_in_the_url_and_in_prompts_are_not_links(env, page, param):
    query = {"model": "demo", "set": "inj", param: URL}
    at = open_page(page, query)
    assert not at.exception, at.exception
    for s in texts(at):
        assert not autolinked(s), f"{page}?{param}=: a link in {s!r}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["existing", "traversal", "absent"])
def test_a_server_path_as_steering_direction_is_refused_without_echo(env, tmp_path, kind):
    import numpy as np

    secret = tmp_path / "secret-dir" / "v.npy"
    secret.parent.mkdir()
    np.save(secret, np.ones(8))
    value = {
        "existing": str(secret),
        "traversal": "../../secret-dir/v.npy",
        "absent": "/nonexistent/x.npy",
    }[kind]
    at = open_page("steering", {"model": "demo", "set": "inj", "direction": value})
    assert not at.exception, at.exception
    shown = " ".join(texts(at))
    assert "comes from an upload" in shown
    assert "secret-dir" not in shown and "nonexistent" not in shown


@pytest.mark.slow
def test_typing_a_hub_id_on_the_run_page_downloads_nothing_until_asked(env, monkeypatch):
    from backend import models as M
    from backend.errors import LayerScopeError

    calls = []

    def offline(*a, **k):
        calls.append(a)
        raise LayerScopeError("offline in this test")

    monkeypatch.setattr(M, "_hub_snapshot", offline)
    at = open_page("run", {})
    at.text_input(key="run_model_typed").input("someorg/not-here-model").run()
    assert not at.exception, at.exception
    assert not calls, "a typed hub id was resolved (downloaded) before any click"
    assert any("only when you ask" in i.value for i in at.info)
    assert any("Fetch the model" in e.value for e in at.error)
    at.button(key="run_hub_fetch").click().run()
    assert calls  # now it is fetched (here: refused, shown as a message)
    assert not at.exception, at.exception
