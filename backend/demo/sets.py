"""Bundled demo prompt sets (CSV in backend/demo/sets/), held out from the training corpus.

Regenerate with `python -m backend.demo.sets` (seeded; deduplicated against training text).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from backend.demo import corpus

SETS_DIR = Path(__file__).parent / "sets"
DEMO_SETS: dict[str, tuple[Path, str]] = {
    "agreement": (SETS_DIR / "agreement.csv",
                  "Subject number (singular/plural) that decides the verb, often across a "
                  "distractor noun of the other number. Prompts end right before the verb: "
                  "watch number become decodable layer by layer."),
    "sentiment": (SETS_DIR / "sentiment.csv",
                  "Reviews whose two adjectives decide the verdict word (positive/negative)."),
    "topic": (SETS_DIR / "topic.csv",
              "News sentences about animals, food, weather or sports: clusters by topic."),
    "depth": (SETS_DIR / "depth.csv",
              "Bracket strings with the nesting depth of every token as a per-token label."),
    "ambiguity": (SETS_DIR / "ambiguity.csv",
                  "Prompts whose continuation is determined (counting, copying) or free "
                  "(random colour lists): sampled generations settle or diverge. These prompts "
                  "may occur in training; the other sets are held out."),
}
SIZES = {"agreement": 400, "sentiment": 300, "topic": 300, "depth": 300, "ambiguity": 80}
SET_SEED = 777


def load_demo_set(name: str) -> pd.DataFrame:
    """Columns text, label, group, token_labels (list of str or None)."""
    path, _ = DEMO_SETS[name]
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["group"] = df["group"].replace("", None)
    df["token_labels"] = [v.split() if v else None for v in df["token_labels"]]
    return df[["text", "label", "group", "token_labels"]]


def write_sets() -> dict[str, int]:
    SETS_DIR.mkdir(exist_ok=True)
    counts = {}
    for i, (name, n) in enumerate(SIZES.items()):
        if name == "ambiguity":  # about sampling behaviour, not generalisation: balance kinds
            pool = corpus.demo_set(name, 1000, SET_SEED + i, heldout_only=False)
            rows = [e for e in pool if e.label == "deterministic"][: n // 2]
            rows += [e for e in pool if e.label == "ambiguous"][: n - len(rows)]
        else:
            rows = corpus.demo_set(name, n, SET_SEED + i)
        df = pd.DataFrame({
            "text": [e.prompt for e in rows], "label": [e.label for e in rows],
            "group": [e.group for e in rows],
            "token_labels": [" ".join(e.token_labels) if e.token_labels else "" for e in rows],
        })
        df.to_csv(DEMO_SETS[name][0], index=False)
        counts[name] = len(df)
    return counts


if __name__ == "__main__":
    print(write_sets())
