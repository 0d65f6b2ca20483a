"""Glossary tooltips: the jargon a view shows has a short gloss in its help (?) icon."""

import pytest

from backend import models
from tests.pages.conftest import open_page


def test_glossary_matches_the_numbers_it_quotes():
    from backend.analysis.lens import TIE_RTOL
    from backend.glossary import GLOSSARY
    from pages import _ui

    assert f"within {TIE_RTOL:.1%} of its probability" in GLOSSARY["tie"]
    text = _ui.gloss("recovery", "logit difference")
    assert text.startswith("**recovery**: (patched − corrupted)") and "**logit difference**" in text


@pytest.mark.skipif("demo" not in models.bundled_models(), reason="no demo model")
def test_patching_metric_explains_logit_difference_before_any_compute(app_db):
    at = open_page("patching", {"model": "demo"})
    assert not at.exception
    assert "logit(answer) − logit(against)" in at.radio(key="qp_metric").help
