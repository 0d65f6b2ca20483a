"""Bundled demo prompt sets (CSV in backend/demo/sets/), held out from the training corpus.

Regenerate with `python -m backend.demo.sets` (seeded; every prompt except the ambiguity set's
is one the training corpus never contains, see ``corpus.heldout``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from backend.demo import corpus

log = logging.getLogger(__name__)
SETS_DIR = Path(__file__).parent / "sets"
DEMO_SETS: dict[str, tuple[Path, str]] = {
    "agreement": (
        SETS_DIR / "agreement.csv",
        (
            "Subject number (singular/plural) decides the verb, often across a noun of the other "
            "number (group 'with distractor'). Prompts end right before the verb, so the next word "
            "is the verb: watch number become readable layer by layer, and the distractor lose."
        ),
    ),
    "sentiment": (
        SETS_DIR / "sentiment.csv",
        (
            "Short reviews ending in 'verdict :' (next word good/bad). 'not' flips an adjective and "
            "after 'but' the second clause decides (groups plain / negated / contrast), so the "
            "label needs composition, not just the words: compare with the untrained twin."
        ),
    ),
    "topic": (
        SETS_DIR / "topic.csv",
        (
            "News sentences about animals, food, weather or sports, cut before a content noun; "
            "the label is the topic of the word to come. In 'topic shift' prompts a second "
            "sentence changes the topic: does the model follow the new one?"
        ),
    ),
    "depth": (
        SETS_DIR / "depth.csv",
        (
            "Bracket strings; every token is labelled with its nesting depth (per-token label), "
            "which the model must count to know when a string may end."
        ),
    ),
    "ambiguity": (
        SETS_DIR / "ambiguity.csv",
        (
            "Prompts with one right continuation (fixed facts like 'ana says my favourite colour "
            "is', counting, repeating) or several equally likely ones ('someone says my favourite "
            "colour is', random colour lists): sampled generations agree or diverge. For the "
            "generation view; these prompts also occur in training."
        ),
    ),
}
SET_SEED = 777
GROUPS = {  # (n, groups cycled so that each set is balanced)
    "agreement": (400, ["with distractor", "without distractor"]),
    "sentiment": (300, ["plain", "negated", "contrast"]),
    "topic": (300, ["one topic", "topic shift"]),
    "depth": (300, None),
}
AMBIGUITY = {"fact": 36, "free": 12, "count": 21, "repeat": 43, "list": 88}  # all of the first 3


def minimal_pair(name: str, prompt: str) -> str:
    """The prompt's minimal pair (same number of words, the label flipped), or "" if none.

    agreement: every noun and relative-clause verb takes the other number ("the cat near the
    dogs often" <-> "the cats near the dog often"); sentiment: a single-adjective clause swaps
    "not" and "very" ("the bed was not warm" <-> "the bed was very warm"); other sets: none."""
    from backend.demo import words as words_demo

    words = prompt.split()
    if name == "agreement":
        flip = {**words_demo.NOUNS, **words_demo.REL_VERBS}
        flip |= {v: k for k, v in flip.items()}
        return " ".join(flip.get(w, w) for w in words)
    if name == "sentiment" and "but" not in words:
        m = re.fullmatch(r"(review : the \w+ was) (not|very) (\w+) (\. verdict :)", prompt)
        if m:
            swap = {"not": "very", "very": "not"}[m[2]]
            return f"{m[1]} {swap} {m[3]} {m[4]}"
    return ""


def load_pairs(name: str) -> list[tuple[str, str]]:
    """(clean, corrupted) minimal pairs of a bundled set: its rows with a ``pair``."""
    if name not in DEMO_SETS:
        return []
    df = pd.read_csv(DEMO_SETS[name][0], dtype=str, keep_default_na=False)
    if "pair" not in df:
        return []
    return [(t, p) for t, p in zip(df["text"], df["pair"]) if p]


def load_demo_set(name: str) -> pd.DataFrame:
    """Columns text, label, group (str or None), token_labels (list of str or None)."""
    path, _ = DEMO_SETS[name]
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["group"] = df["group"].replace("", None)
    df["token_labels"] = [v.split() if v else None for v in df["token_labels"]]
    return df[["text", "label", "group", "token_labels"]]


def build_set(name: str) -> list[corpus.Example]:
    seed = SET_SEED + list(DEMO_SETS).index(name)
    if name == "ambiguity":
        return [e for i, (kind, n) in enumerate(AMBIGUITY.items())
                for e in corpus.demo_set(name, n, seed + 100 * i, [kind])]  # fmt: skip
    n, groups = GROUPS[name]
    return corpus.demo_set(name, n, seed, groups)


def write_sets() -> dict[str, int]:
    SETS_DIR.mkdir(exist_ok=True)
    counts = {}
    for name, (path, _) in DEMO_SETS.items():
        rows = build_set(name)
        df = pd.DataFrame({
            "text": [e.prompt for e in rows], "label": [e.label for e in rows],
            "group": [e.group for e in rows],
            "token_labels": [" ".join(e.token_labels) if e.token_labels else "" for e in rows],
        })  # fmt: skip
        pairs = [minimal_pair(name, e.prompt) for e in rows]
        if any(pairs):  # only the sets with minimal pairs get the column
            df["pair"] = pairs
        df.to_csv(path, index=False)
        counts[name] = len(df)
        log.info("%s: %d prompts -> %s", name, len(df), path)
    return counts


if __name__ == "__main__":
    print(write_sets())
