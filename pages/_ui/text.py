"""User text in markdown and HTML made inert (no markup, no autolinks), CSV bytes, messages, glossary tooltips."""

from __future__ import annotations

import re

import pandas as pd
import streamlit as st

from backend.errors import LayerScopeError

PAGE_URLS = {"run": "run", "library": "library", "prompt": "prompt"}


# -- user strings in markdown ---------------------------------------------------------------
_MD_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~:$&=\"'")


_JOIN = "\u2060"  # WORD JOINER: invisible, no line break, not a URL or e-mail character


_AUTOLINK = re.compile(r"(?i)(:(?=//)|(?<![^\W_])www(?=\.)|@)")


def unlinked(s) -> str:
    """A user string that no autolinker turns into a link: a word joiner inside ``://``, after
    ``www`` and ``@``. Streamlit's markdown (remark-gfm) finds ``https://…``, ``www.…`` and
    e-mail addresses in the text *after* backslash escapes and entities are resolved, so
    escaping alone does not stop it."""
    return _AUTOLINK.sub(lambda m: m.group(1) + _JOIN, str(s))


def md(s) -> str:
    """A user-controlled string (prompt, token, label, model or set name, a URL value, an error
    that quotes one) made inert for Streamlit markdown: no link, no formatting, no autolink."""
    text = " ".join(unlinked(s).split())  # no line breaks: no headings, lists or tables
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text)


def html_text(s) -> str:
    """A user string inside our own HTML (``unsafe_allow_html``): HTML-escaped, and markdown
    punctuation as entities, so neither tags nor markdown are interpreted."""
    import html

    escaped = html.escape(unlinked(s), quote=True)  # entities start with & and end with ;
    return "".join(f"&#{ord(c)};" if c in _MD_SPECIAL - {"&", ";"} else c for c in escaped)


def csv_bytes(df: pd.DataFrame) -> bytes:
    """A table as a CSV download: formula-like cells neutralised (backend.exports.table_csv)."""
    from backend import exports

    return exports.table_csv(df)


def message(e: Exception, kind: str = "info") -> None:
    """A user-caused problem as one escaped sentence (st.info / st.warning / st.error)."""
    text = str(e) if isinstance(e, LayerScopeError) else f"{type(e).__name__}: {e}"
    getattr(st, kind)(md(text))


# -- glossary: one short tooltip per term a view uses (help=) -------------------------------
def gloss(*terms: str) -> str:
    """The tooltip text for ``terms`` (a page's ``help=``): each term, bold, with its gloss
    from ``backend.glossary.GLOSSARY``."""
    from backend.glossary import GLOSSARY

    return "\n\n".join(f"**{t}**: {GLOSSARY[t]}" for t in terms)


def error_box(e: Exception) -> None:
    message(e, "error")
