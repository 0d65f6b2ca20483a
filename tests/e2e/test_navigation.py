"""Navigation in real Chromium: /run resolves, and Back leaves a page whose script wrote its
settings into the URL (Streamlit pushes a history entry per query-string change; the app
turns same-page changes into replacements)."""

import pytest

from tests.e2e.conftest import assert_no_exception, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_run_resolves_and_back_returns_to_the_previous_page(server, page):
    page.goto(f"{server}/run")
    wait_idle(page)
    assert_no_exception(page, "/run")
    assert page.get_by_text("Page not found").count() == 0
    page.get_by_role("heading", name="LayerScope").first.wait_for(timeout=30_000)

    page.goto(f"{server}/library")
    wait_idle(page)
    start = page.evaluate("history.length")
    page.locator("[data-testid='stSidebarNav'] a[href$='/stats']").click()
    wait_idle(page)
    page.wait_for_url("**/stats?*model=*", timeout=30_000)  # the pickers wrote the URL
    page.wait_for_timeout(1000)
    # one entry for the page change; the query-string writes replaced it
    assert page.evaluate("history.length") == start + 1
    page.go_back()
    page.wait_for_url("**/library*", timeout=30_000)
    wait_idle(page)
    # wait for the heading: "idle" can come before the script's elements paint
    page.get_by_role("heading", name="Library").first.wait_for(timeout=60_000)
    assert page.get_by_role("heading", name="Library").count() == 1


def test_patching_drops_the_heatmap_when_its_setting_changes(server, page):
    page.goto(f"{server}/patching?model=demo")
    wait_idle(page)
    page.get_by_role("button", name="Compute").click()
    page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=180_000)
    wait_idle(page)
    page.get_by_text("attention out", exact=True).click()
    page.wait_for_url("**component=attn*", timeout=60_000)
    wait_idle(page)
    # the previous component's heatmap goes (within seconds: the rerun may still be drawing)
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot').length === 0", timeout=20_000
    )
    page.get_by_text("Press Compute").first.wait_for(timeout=20_000)
