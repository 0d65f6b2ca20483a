"""AppTest helpers: every page test gets its own temp DB and a fresh Streamlit cache."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def using_db(db, monkeypatch):
    """Point the app at ``db`` with fresh Streamlit caches; a fixture body (``yield from``)."""
    import streamlit as st

    monkeypatch.setenv("LAYERSCOPE_DB", str(db))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield db
    st.cache_resource.clear()  # closes nothing by itself; drop our singletons between tests


@pytest.fixture
def app_db(tmp_path, monkeypatch):
    yield from using_db(tmp_path / "app.duckdb", monkeypatch)


def open_page(name: str, query: dict | None = None, timeout: float = 120):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if name != "run":
        at.switch_page(f"pages/{name}.py")
    return at.run()


def wait_jobs(timeout: float = 120) -> None:
    """Wait for the app's worker (same process in AppTest) to finish its jobs."""
    import time

    from pages import _ui

    w = _ui._worker(_ui.db_path())
    end = time.monotonic() + timeout
    while w.active_jobs() and time.monotonic() < end:
        time.sleep(0.1)
    if w.active_jobs():
        raise AssertionError(f"jobs still running after {timeout:.0f} s: {w.active_jobs()}")
