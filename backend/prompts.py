"""Prompt sets from files or typed text: TXT (one per line), CSV, JSONL.

Every problem a user can cause becomes a LayerScopeError with one sentence.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd

from backend.errors import LayerScopeError

FORMATS = (".txt", ".csv", ".jsonl", ".json")
MAX_PROMPT_CHARS = 100_000  #: longer is no prompt (a 32 MB line took 188 s and 5 GB to tokenize)
MAX_FILE_BYTES = 64 * 2**20  #: a prompt file larger than this is refused before it is read
MAX_SET_NAME = 64
_NAME_PUNCT = set(" _-.+()")
TEXT_GUESSES = ("text", "prompt", "sentence", "input", "question")


def validate_set_name(name: str) -> str:
    """A prompt set's name as stored: 1-64 letters, digits, spaces or ``_-.+()``, not starting
    with a dot. Names reach file names (exports) and URLs, so nothing else is accepted."""
    name = (name or "").strip()
    if not name:
        raise LayerScopeError("A prompt set needs a name.")
    if len(name) > MAX_SET_NAME:
        raise LayerScopeError(
            f"The set name is {len(name)} characters long; use at most {MAX_SET_NAME}."
        )
    bad = sorted({c for c in name if not (c.isalnum() or c in _NAME_PUNCT)})
    if bad or name.startswith("."):
        shown = " ".join(repr(c) for c in bad[:5]) if bad else "a leading '.'"
        raise LayerScopeError(
            f"The set name '{slug(name)}…' has characters a set name cannot have ({shown}); "
            "use letters, digits, spaces and _-.+()"
        )
    return name


def slug(name: str, default: str = "set") -> str:
    """A file-name-safe version of ``name`` (for exports and set names from file names)."""
    out = "".join(c if c.isalnum() or c in "-_." else "-" for c in str(name)).strip("-.")
    while "--" in out:
        out = out.replace("--", "-")
    return out[:MAX_SET_NAME] or default


def dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the first row of each distinct text (a run is one model on one text, so a
    repeated prompt would be one unit counted twice). Returns (rows kept, rows dropped)."""
    keep = ~df["text"].astype(str).duplicated(keep="first")
    return df[keep.to_numpy()].reset_index(drop=True), int((~keep).sum())


def check_sizes(texts) -> None:
    """Refuse, before any tokenizer sees them, prompts longer than ``MAX_PROMPT_CHARS``."""
    for i, t in enumerate(texts):
        if len(t) > MAX_PROMPT_CHARS:
            raise LayerScopeError(
                f"Prompt {i + 1} has {len(t):,} characters; a prompt may have at most "
                f"{MAX_PROMPT_CHARS:,} (split it into shorter prompts)."
            )


def check_file_size(n_bytes: int, name) -> None:
    if n_bytes > MAX_FILE_BYTES:
        raise LayerScopeError(
            f"'{Path(str(name)).name}' is {n_bytes / 2**20:,.0f} MB; a prompt file may be at "
            f"most {MAX_FILE_BYTES // 2**20} MB (split it into several sets)."
        )


def from_lines(text: str) -> pd.DataFrame:
    """One prompt per non-empty line."""
    lines = [ln.strip() for ln in (text or "").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise LayerScopeError("No prompts: type at least one non-empty line.")
    check_sizes(lines)
    return pd.DataFrame({"text": lines})


def _cell(v) -> str | None:
    """A table cell as text; a missing one (JSON null, an empty CSV cell read as NaN) as None."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v if isinstance(v, str) else str(v)


def read_table(data: bytes | str | Path, name: str | None = None) -> pd.DataFrame:
    """Raw table of a file (all columns), for column pickers. ``name`` gives the format."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise LayerScopeError(f"No prompt file at '{path}'.")
        if not path.is_file():
            raise LayerScopeError(f"'{path}' is a folder, not a prompt file; name one file in it.")
        check_file_size(path.stat().st_size, path)
        try:
            name, data = name or path.name, path.read_bytes()
        except OSError as e:
            raise LayerScopeError(f"Cannot read '{path}': {e.strerror or e}.") from None
    else:
        check_file_size(len(data), name or "the file")
    suffix = Path(name or "").suffix.lower()
    if suffix not in FORMATS:
        raise LayerScopeError(f"Unsupported prompt file '{name}': use one of {', '.join(FORMATS)}.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LayerScopeError(f"'{name}' is not UTF-8 text.") from None
    if suffix == ".txt":
        return from_lines(text)
    try:
        if suffix == ".csv":
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        else:
            rows = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
            if suffix == ".json" and len(rows) == 1 and isinstance(rows[0], list):
                rows = rows[0]
            if not all(isinstance(r, dict) for r in rows):
                raise LayerScopeError(f"'{name}': every JSON line must be an object.")
            df = pd.DataFrame(rows)
    except pd.errors.EmptyDataError:
        raise LayerScopeError(f"'{name}' has no rows.") from None
    except (pd.errors.ParserError, json.JSONDecodeError) as e:
        first = str(e).splitlines()[0]
        raise LayerScopeError(f"'{name}' is malformed: {first}") from None
    if df.empty:
        raise LayerScopeError(f"'{name}' has no rows.")
    return df


def guess_text_column(df: pd.DataFrame) -> str:
    for c in df.columns:
        if str(c).lower() in TEXT_GUESSES:
            return c
    return df.columns[0]


def select_columns(
    df: pd.DataFrame,
    text_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    token_labels_column: str | None = None,
) -> pd.DataFrame:
    """Normalise to columns text, label, group, token_labels; drop empty texts."""
    text_column = text_column or guess_text_column(df)
    for role, col in (
        ("text", text_column),
        ("label", label_column),
        ("group", group_column),
        ("token labels", token_labels_column),
    ):
        if col is not None and col not in df.columns:
            raise LayerScopeError(
                f"No {role} column '{col}'; the file has: {', '.join(map(str, df.columns))}."
            )
    if token_labels_column is None and "token_labels" in df.columns:
        token_labels_column = "token_labels"
    texts = [(_cell(v) or "").strip() for v in df[text_column]]
    out = pd.DataFrame({"text": pd.Series(texts, dtype=object)})
    out["label"] = [_cell(v) for v in df[label_column]] if label_column else None
    out["group"] = [_cell(v) for v in df[group_column]] if group_column else None
    if token_labels_column:
        out["token_labels"] = [
            v if isinstance(v, list) else (str(v).split() if str(v).strip() else None)
            for v in df[token_labels_column]
        ]
    out = out[out["text"] != ""].reset_index(drop=True)
    if out.empty:
        raise LayerScopeError("Every prompt in the file is empty.")
    check_sizes(out["text"])
    return out


def load_prompts(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
) -> pd.DataFrame:
    """File -> normalised prompt table (text, label, group[, token_labels])."""
    return select_columns(read_table(path), text_column, label_column, group_column)
