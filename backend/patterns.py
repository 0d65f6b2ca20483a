"""User-supplied regular expressions (a URL's ``?regex=``, ``--answer-regex``) run bounded.

A pattern is hostile input: Python's ``re`` can backtrack for hours on ``(x+x+)+y``. Patterns
are compiled with the ``regex`` package and every search runs with a time limit; a pattern
that exceeds it, is too long or does not compile becomes one ``LayerScopeError`` sentence.
"""

from __future__ import annotations

import time

import regex

from backend.errors import LayerScopeError

MAX_PATTERN_CHARS = 200
SEARCH_TIMEOUT_S = 0.25  #: per search
TOTAL_TIMEOUT_S = 2.0  #: all searches of one view together


class Pattern:
    """A compiled user pattern with a time budget shared by all its searches."""

    def __init__(self, pattern: str, total_s: float = TOTAL_TIMEOUT_S):
        if len(pattern) > MAX_PATTERN_CHARS:
            raise LayerScopeError(
                f"The answer pattern is {len(pattern)} characters long; "
                f"use at most {MAX_PATTERN_CHARS}."
            )
        try:
            self._re = regex.compile(pattern)
        except (regex.error, ValueError, OverflowError) as e:
            raise LayerScopeError(f"The answer pattern is not a valid regex: {e}.") from None
        self.pattern = pattern
        self._left = total_s

    def search(self, text: str):
        """First match in ``text`` or None; raises LayerScopeError when over the time limit."""
        if self._left <= 0:
            raise self._too_slow()
        t0 = time.monotonic()
        try:
            return self._re.search(text, timeout=min(SEARCH_TIMEOUT_S, self._left))
        except TimeoutError:
            raise self._too_slow() from None
        finally:
            self._left -= time.monotonic() - t0

    def _too_slow(self) -> LayerScopeError:
        return LayerScopeError(
            "The answer pattern takes too long to match (it backtracks heavily, e.g. nested "
            "repeats such as (x+x+)+); simplify it."
        )
