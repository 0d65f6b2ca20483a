"""End to end in real Chromium: open the app, run the demo, see the job finish, open every page."""

import re

import pytest

from backend import models
from tests.e2e.conftest import assert_no_exception, shot, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWS_WITH_PLOTS = {"trajectories", "similarity", "probes", "lens", "stats", "prompt"}
PAGES = [
    "library",
    "prompt",
    "tour",
    "trajectories",
    "similarity",
    "probes",
    "lens",
    "stats",
    "generation",
    "patching",
    "attention",
]


@pytest.mark.skipif("demo" not in models.bundled_models(), reason="bundled demo model missing")
def test_try_the_demo_then_every_page(server, page):
    page.goto(server)
    wait_idle(page)
    assert_no_exception(page, "run (empty cache)")
    shot(page, "01-run-empty")
    page.get_by_role("button", name="Try the demo").click()
    try:
        page.get_by_text(re.compile(r"done — \d+ runs computed")).first.wait_for(timeout=180_000)
    finally:
        shot(page, "02a-run-after-click")
    wait_idle(page)
    shot(page, "02-run-demo-done")
    assert_no_exception(page, "run (after demo)")
    nav = page.locator("[data-testid='stSidebarNav'] a")
    available = {(a.get_attribute("href") or "").rstrip("/").rsplit("/", 1)[-1] for a in nav.all()}
    missing = [p for p in PAGES if p not in available]
    assert not missing, f"pages missing from the sidebar: {missing} (found {sorted(available)})"
    for i, name in enumerate(PAGES, start=3):
        page.goto(f"{server}/{name}?model=demo&set=agreement")
        wait_idle(page, timeout=180)
        if name in VIEWS_WITH_PLOTS:  # the script may still be drawing: wait for the figure
            page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=120_000)
            page.wait_for_timeout(1500)
        shot(page, f"{i:02d}-{name}")
        assert_no_exception(page, name)
    # the causal views compute on a click only; the click draws the heatmap
    for name in ("patching", "attention"):
        page.goto(f"{server}/{name}?model=demo")
        wait_idle(page)
        assert page.locator(".js-plotly-plot").count() == 0 or name == "patching"
        page.get_by_role("button", name="Compute").click()
        page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=120_000)
        page.wait_for_timeout(1500)
        shot(page, f"20-{name}-computed")
        assert_no_exception(page, f"{name} (computed)")
    page.goto(f"{server}/library")
    wait_idle(page)
    # the Runs metric; wait for it: "idle" can come before the script's last elements paint
    page.get_by_text("400", exact=True).first.wait_for(timeout=60_000)
