"""Input sanity before a job: what the tokenizer makes of the prompts (torch-free, no forward).

A held-out word-level model can read most words of a new set as ``<unk>``, and many prompts
then become the same token sequence: every view would analyse noise. ``check`` counts, from
the tokenized prompts alone, the share of unknown tokens, the prompts whose token sequence
repeats an earlier prompt's, the truncated prompts and the prompts with no tokens of their
own, and says in sentences what is above its threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.records import Tokenized

UNKNOWN_WARN = 0.5  #: warn when more than this share of the text's tokens are unknown
DUPLICATE_WARN = 0.2  #: warn when more than this share of prompts repeat a token sequence


@dataclass(frozen=True, kw_only=True)
class InputSanity:
    prompts: int
    tokens: int  #: tokens read from the text (the tokenizer's added specials left out)
    unknown: int  #: of those, the tokenizer's unknown token
    unk_token: str | None  #: its text ("<unk>"); None: the tokenizer has no unknown token
    duplicates: int  #: prompts whose token sequence equals an earlier prompt's
    distinct: int  #: distinct token sequences
    truncated: int  #: prompts cut at the token limit
    empty: int  #: prompts with no token from their text
    example: tuple[str, str] | None = None  #: two prompts that tokenize identically
    limit: int | None = None  #: tokens kept per prompt (None: no limit)

    @property
    def unknown_share(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0

    @property
    def duplicate_share(self) -> float:
        return self.duplicates / self.prompts if self.prompts else 0.0

    @property
    def warnings(self) -> tuple[str, ...]:
        """One sentence per problem above its threshold (empty: nothing to warn about)."""
        out = []
        if self.tokens and self.unknown_share > UNKNOWN_WARN:
            out.append(
                f"{self.unknown_share:.0%} of the prompts' tokens are unknown to this model's "
                f"tokenizer ({self.unknown:,} of {self.tokens:,} are {self.unk_token or 'unknown'})"
                ": the views would analyse the unknown token, not your words — use a model "
                "whose vocabulary covers this text"
            )
        if self.prompts and self.duplicate_share > DUPLICATE_WARN:
            ex = ""
            if self.example:
                ex = f", e.g. {self.example[0]!r} and {self.example[1]!r}"
            out.append(
                f"{self.duplicates:,} of {self.prompts:,} prompts ({self.duplicate_share:.0%}) "
                f"tokenize exactly like another prompt ({self.distinct:,} distinct token "
                f"sequences{ex}): the model cannot tell them apart"
            )
        if self.empty:
            out.append(
                f"{self.empty:,} prompt(s) have no tokens of their own for this tokenizer "
                "and will be skipped"
            )
        if self.truncated:
            out.append(
                f"{self.truncated:,} prompt(s) are longer than {self.limit or 'the limit of'} "
                "tokens and will be truncated (each run is flagged)"
            )
        return tuple(out)

    def summary(self) -> str:
        """One line: the four counts, for a caption."""
        return (
            f"{self.prompts:,} prompts, {self.tokens:,} tokens: {self.unknown_share:.0%} unknown, "
            f"{self.distinct:,} distinct token sequences, {self.truncated:,} truncated, "
            f"{self.empty:,} without tokens"
        )

    def to_dict(self) -> dict:
        return {
            "prompts": self.prompts,
            "tokens": self.tokens,
            "unknown": self.unknown,
            "unknown_share": round(self.unknown_share, 4),
            "unk_token": self.unk_token,
            "duplicates": self.duplicates,
            "duplicate_share": round(self.duplicate_share, 4),
            "distinct": self.distinct,
            "truncated": self.truncated,
            "empty": self.empty,
            "example": list(self.example) if self.example else None,
            "limit": self.limit,
            "warnings": list(self.warnings),
        }


def check(
    toks: Sequence[Tokenized],
    unk_id: int | None,
    unk_token: str | None = None,
    limit: int | None = None,
) -> InputSanity:
    """Counts over tokenized prompts. A text token is one not added by the tokenizer (the
    unknown token always counts as text: a slow tokenizer gives no offsets to tell)."""
    n_tokens = n_unknown = truncated = empty = 0
    first: dict[tuple[int, ...], str] = {}
    duplicates, example = 0, None
    for t in toks:
        text_ids = [i for i, sp in zip(t.ids, t.special) if not sp or i == unk_id]
        n_tokens += len(text_ids)
        if unk_id is not None:
            n_unknown += sum(i == unk_id for i in text_ids)
        truncated += bool(t.truncated)
        empty += not text_ids
        seq = tuple(t.ids)
        if seq in first:
            duplicates += 1
            if example is None:
                example = (first[seq], t.text)
        else:
            first[seq] = t.text
    return InputSanity(
        prompts=len(toks),
        tokens=n_tokens,
        unknown=n_unknown,
        unk_token=unk_token if unk_id is not None else None,
        duplicates=duplicates,
        distinct=len(first),
        truncated=truncated,
        empty=empty,
        example=example,
        limit=limit,
    )


def check_texts(tokenizer, texts: Sequence[str], max_tokens: int | None = None) -> InputSanity:
    """``check`` on ``texts`` tokenized as a job would (special tokens, the token limit)."""
    from backend.records import tokenize

    return check(
        tokenize(tokenizer, texts, max_tokens),
        getattr(tokenizer, "unk_token_id", None),
        getattr(tokenizer, "unk_token", None),
        max_tokens,
    )
