"""User-controlled strings that Plotly would render as HTML, and a walk over every string a
figure carries (trace names, text, hovers, ticks, titles, annotations)."""

import re

import numpy as np

LINK, BOLD, MD = '<a href="http://x">', "<b>b</b>", "[x](http://a)"
EVIL = (LINK, BOLD, MD)
ESC_LINK, ESC_BOLD = '&lt;a href="http://x"&gt;', "&lt;b&gt;b&lt;/b&gt;"
_BROKEN_ENTITY = re.compile(r"&(?!(?:lt|gt|amp|quot|#\d+);)")


def strings(obj) -> list[str]:
    """Every string anywhere in a figure (or any part of its JSON)."""
    if hasattr(obj, "to_plotly_json"):
        obj = obj.to_plotly_json()
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in strings(v)]
    if isinstance(obj, (list, tuple)) or (isinstance(obj, np.ndarray) and obj.dtype == object):
        return [s for v in obj for s in strings(v)]
    return []


def assert_inert(fig) -> list[str]:
    """No raw user markup anywhere, no entity cut in half; returns the strings to look into."""
    found = strings(fig)
    assert found, "the figure carries no strings at all"
    for s in found:
        assert "<a href" not in s and "<b>b</b>" not in s, s
        assert not _BROKEN_ENTITY.search(s), f"a cut or unknown entity in {s!r}"
    return found


def shown(fig, piece: str) -> bool:
    return any(piece in s for s in strings(fig))
