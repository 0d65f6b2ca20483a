"""Fixtures shared by the backend tests."""

import pytest


@pytest.fixture
def db(tmp_path, monkeypatch):
    """A fresh cache file for the CLI (via LAYERSCOPE_DB, as a user would set it)."""
    path = tmp_path / "cli.duckdb"
    monkeypatch.setenv("LAYERSCOPE_DB", str(path))
    return path
