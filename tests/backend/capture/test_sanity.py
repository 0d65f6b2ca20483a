"""Input sanity before a job: unknown tokens, identical token sequences, truncated, empty."""

import json

from backend.capture import sanity
from backend.records import Tokenized, tokenize
from tests.conftest import make_tokenizer

UNK = 1


def tk(text, ids, special=None, truncated=False):
    special = special or [False] * len(ids)
    return Tokenized(text, ids, [(0, 1)] * len(ids), special, truncated, len(ids))


def test_counts_match_a_hand_count():
    toks = [
        tk("a b", [2, 10, 11], [True, False, False]),  # bos + 2 words
        tk("a ?", [2, 10, UNK], [True, False, False]),  # one unknown
        tk("? ?", [2, UNK, UNK], [True, True, True]),  # a slow tokenizer marks unk special
        tk("! !", [2, UNK, UNK], [True, False, False], truncated=True),  # same ids as above
        tk("", [2], [True]),  # only the added bos
    ]
    r = sanity.check(toks, UNK, "<unk>", limit=3)
    # text tokens: 2 + 2 + 2 + 2 + 0 = 8; unknown: 0 + 1 + 2 + 2 = 5
    assert (r.prompts, r.tokens, r.unknown) == (5, 8, 5)
    assert r.unknown_share == 5 / 8
    assert (r.duplicates, r.distinct, r.example) == (1, 4, ("? ?", "! !"))
    assert (r.truncated, r.empty) == (1, 1)
    w = " | ".join(r.warnings)
    assert "62% of the prompts' tokens are unknown" in w and "<unk>" in w
    assert "no tokens of their own" in w and "longer than 3 tokens" in w
    assert "tokenize exactly like" not in w  # 1 of 5 = 20%: not above the threshold
    d = r.to_dict()
    assert json.loads(json.dumps(d)) == d and d["warnings"] == list(r.warnings)


def test_a_clean_set_has_no_warnings_and_no_unk_token_is_no_unknowns():
    toks = [tk("x", [5, 6]), tk("y", [5, 7])]
    assert sanity.check(toks, UNK).warnings == ()
    r = sanity.check([tk("x", [UNK, UNK])], None)
    assert r.unknown == 0 and r.unk_token is None and r.warnings == ()


def test_word_level_tokenizer_on_held_out_words_warns():
    """The tests' word-level tokenizer knows ~25 words: a set of other words is mostly <unk>
    and its prompts collapse onto a few token sequences."""
    tok = make_tokenizer(bos=True)
    known = ["the cat runs", "the dogs run", "a big red dog sits"]
    r = sanity.check_texts(tok, known)
    assert r.warnings == () and r.unknown == 0 and r.tokens == 11 and r.distinct == 3
    held_out = [
        "the zebra gallops",
        "the giraffe gallops",
        "the lion sleeps",
        "a tiger roars loudly",
        "the cat runs",
    ]
    r = sanity.check_texts(tok, held_out, max_tokens=4)
    assert r.unknown == 8 and r.tokens == 15 and r.unknown_share > sanity.UNKNOWN_WARN
    # "the zebra gallops" = "the giraffe gallops" = "the lion sleeps" = <bos> the <unk> <unk>;
    # "a tiger roars loudly" is cut to 4 tokens: <bos> a <unk> <unk>
    assert (r.duplicates, r.distinct, r.truncated) == (2, 3, 1)
    assert r.example == ("the zebra gallops", "the giraffe gallops")
    assert len(r.warnings) == 3 and "53%" in r.warnings[0] and "tokenize exactly" in r.warnings[1]
    ids = [t.ids for t in tokenize(tok, held_out[:1])]
    assert ids == [[tok.bos_token_id, tok.convert_tokens_to_ids("the"), UNK, UNK]]


def test_extract_cli_warns_on_stderr_and_reports_in_json(tmp_path, capsys, tiny_model_dir):
    from backend.cli import main

    f = tmp_path / "animals.txt"
    f.write_text("the zebra gallops\nthe giraffe gallops\nthe lion sleeps\n")
    db = str(tmp_path / "c.duckdb")
    args = ["extract", "--db", db, "--model", str(tiny_model_dir("gpt2")), "--prompts", str(f)]
    assert main([*args, "--json"]) == 0
    out, err = capsys.readouterr()
    r = json.loads(out.strip().splitlines()[-1])
    s = r["sanity"]
    assert s["unknown_share"] > 0.5 and s["distinct"] == 1 and s["duplicates"] == 2
    assert "warning: 67% of the prompts' tokens are unknown" in err
    assert "2 of 3 prompts (67%) tokenize exactly like another prompt" in err
    assert r["runs"] == 3  # a warning, not a refusal
