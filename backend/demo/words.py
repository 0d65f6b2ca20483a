"""The vocabulary of the demo language, grouped by the task that uses it.

Word lists of different tasks are disjoint (except "the", ".", ":" and the preposition "near"),
so a word's identity says which task a sentence belongs to, never the answer to it.
"""

from __future__ import annotations

import random

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]

# --- agreement: subjects and distractors come from the same nouns ------------------------
NOUNS = {  # singular -> plural
    "dog": "dogs", "cat": "cats", "bird": "birds", "horse": "horses", "teacher": "teachers",
    "child": "children", "doctor": "doctors", "king": "kings", "girl": "girls", "boy": "boys",
    "robot": "robots", "wolf": "wolves", "friend": "friends", "baby": "babies",
}  # fmt: skip
NOUN_ADJ = ["big", "small", "old", "young", "tall", "little"]
PREPS = ["near", "behind", "with", "beside", "under", "above"]
REL_VERBS = {"sees": "see", "likes": "like", "helps": "help", "follows": "follow",
             "calls": "call"}  # fmt: skip
PRE_ADVERBS = ["often", "never", "always", "still", "also", "rarely"]
VERBS = {  # singular -> plural
    "runs": "run", "sleeps": "sleep", "sings": "sing", "jumps": "jump", "waits": "wait",
    "smiles": "smile", "falls": "fall", "works": "work", "laughs": "laugh", "swims": "swim",
}  # fmt: skip
POST_ADVERBS = ["today", "quickly", "again", "slowly", "now", "outside", "here", "loudly"]

# --- sentiment ----------------------------------------------------------------------------
POS_ADJ = ["great", "lovely", "fresh", "warm", "clean", "friendly", "fun", "bright"]
NEG_ADJ = ["awful", "stale", "cold", "dirty", "rude", "boring", "dull", "noisy"]
REVIEW_NOUNS = ["film", "hotel", "book", "room", "show", "trip", "song", "staff", "view", "bed"]
INTENSIFIERS = ["very", "really", "so", "quite"]
VERDICT = {"positive": "good", "negative": "bad"}

# --- topic: (agents, verbs, objects, places); all four lists disjoint across topics --------
TOPICS = {
    "animals": (["farmer", "vet", "shepherd"], ["fed", "chased", "washed", "brushed"],
                ["cow", "goat", "sheep", "pig", "duck", "hen", "lamb", "pony"],
                ["barn", "field", "farm", "pond"]),
    "food": (["cook", "baker", "chef"], ["cooked", "sliced", "baked", "served"],
             ["bread", "rice", "pasta", "salad", "cheese", "apple", "pie", "soup"],
             ["kitchen", "market", "oven", "cafe"]),
    "weather": (["sailor", "pilot", "forecaster"], ["feared", "predicted", "measured", "tracked"],
                ["storm", "rain", "snow", "wind", "fog", "frost", "thunder", "cloud"],
                ["coast", "hills", "valley", "sky"]),
    "sports": (["player", "coach", "referee"], ["kicked", "won", "lost", "scored"],
               ["ball", "match", "race", "goal", "cup", "game", "point", "title"],
               ["stadium", "court", "track", "pitch"]),
}  # fmt: skip

# --- depth --------------------------------------------------------------------------------
DEPTH_FILLERS = ["k", "m", "p", "q", "x", "y", "z", "w"]

# --- ambiguity ----------------------------------------------------------------------------
NAMES = ["ana", "ben", "cleo", "dan", "eva", "finn", "gus", "hana", "ivo", "jill", "kai", "lena"]
STRANGERS = ["someone", "a guest", "a stranger", "a visitor"]  # speakers with no fixed facts
FAVOURITES = {  # attribute -> the 4 values it can take
    "colour": ["red", "blue", "green", "yellow"],
    "drink": ["tea", "coffee", "milk", "juice"],
    "day": ["monday", "tuesday", "friday", "sunday"],
}
LIST_COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve"]  # fmt: skip
FUNCTION_WORDS = ["the", "that", ".", ":", "[", "]", "and", "but", "not", "was", "review",
                  "verdict", "or", "news", "then", "they", "saw", "says", "my", "favourite", "is",
                  "count", "list", "repeat", "a"]  # fmt: skip


def _facts(seed: int = 42) -> dict[tuple[str, str], str]:
    rng = random.Random(seed)
    return {(n, a): rng.choice(vals) for n in NAMES for a, vals in FAVOURITES.items()}


FACTS = _facts()
"""(name, attribute) -> the fixed value: "ana says my favourite colour is <FACTS[ana, colour]>"."""


def vocabulary() -> list[str]:
    """Every word the generator can produce, specials first, then sorted (a fixed order)."""
    words: set[str] = set(FUNCTION_WORDS)
    words |= set(NOUNS) | set(NOUNS.values()) | set(NOUN_ADJ) | set(PREPS)
    words |= set(REL_VERBS) | set(REL_VERBS.values()) | set(PRE_ADVERBS) | set(POST_ADVERBS)
    words |= set(VERBS) | set(VERBS.values())
    words |= set(POS_ADJ) | set(NEG_ADJ) | set(REVIEW_NOUNS) | set(VERDICT.values())
    words |= set(INTENSIFIERS)
    for lists in TOPICS.values():
        for words_of_role in lists:
            words |= set(words_of_role)
    words |= set(DEPTH_FILLERS) | set(NAMES) | set(NUMBERS) | set(LIST_COLOURS)
    words |= {w for s in STRANGERS for w in s.split()} | set(FAVOURITES)
    words |= {v for vals in FAVOURITES.values() for v in vals}
    return SPECIALS + sorted(words)
