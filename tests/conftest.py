"""Shared fixtures: tiny models of each family saved to disk, loaded back like a user's dir."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
pytest_plugins = ["tests._budget", "pytester"]  # the fast tier's budget; pytester tests it

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

WORDS = [
    "the",
    "a",
    "cat",
    "cats",
    "dog",
    "dogs",
    "runs",
    "run",
    "sits",
    "sit",
    "on",
    "mat",
    "near",
    "big",
    "small",
    "red",
    ".",
    ",",
    "and",
    "is",
    "are",
    "was",
    "were",
    "happy",
    "sad",
]
TINY = dict(hidden=32, layers=3, heads=4, inter=64)


def make_tokenizer(bos: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<bos>", "<eos>", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        tk.post_processor = processors.TemplateProcessing(
            single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
    )


def make_config(family: str):
    import transformers as tf

    v = len(WORDS) + 7
    h, n, a, i = TINY["hidden"], TINY["layers"], TINY["heads"], TINY["inter"]
    if family == "gpt2":
        return tf.GPT2Config(
            vocab_size=v,
            n_embd=h,
            n_layer=n,
            n_head=a,
            n_positions=128,
            bos_token_id=2,
            eos_token_id=3,
        )
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(
            vocab_size=v,
            hidden_size=h,
            num_hidden_layers=n,
            num_attention_heads=a,
            intermediate_size=i,
            max_position_embeddings=128,
            bos_token_id=2,
            eos_token_id=3,
        )
    if family in ("llama", "qwen2", "mistral"):
        cls = {"llama": tf.LlamaConfig, "qwen2": tf.Qwen2Config, "mistral": tf.MistralConfig}
        return cls[family](
            vocab_size=v,
            hidden_size=h,
            num_hidden_layers=n,
            num_attention_heads=a,
            num_key_value_heads=2,
            intermediate_size=i,
            max_position_embeddings=128,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        )
    if family == "bert":
        return tf.BertConfig(
            vocab_size=v,
            hidden_size=h,
            num_hidden_layers=n,
            num_attention_heads=a,
            intermediate_size=i,
            max_position_embeddings=128,
        )
    raise ValueError(family)


def save_tiny(family: str, path: Path, seed: int = 0) -> Path:
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    cfg = make_config(family)
    model = (tf.AutoModel if family == "bert" else tf.AutoModelForCausalLM).from_config(cfg)
    model.save_pretrained(path)
    make_tokenizer(bos=family != "gpt2").save_pretrained(path)
    return path


FAMILIES = ("gpt2", "gpt_neox", "llama", "qwen2", "mistral", "bert")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """factory(family) -> path of a tiny saved model (built once per session)."""
    made: dict[str, Path] = {}

    def get(family: str = "gpt2") -> Path:
        if family not in made:
            made[family] = save_tiny(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return made[family]

    return get


@pytest.fixture
def store():
    from backend.store import Store

    with Store(":memory:") as s:
        yield s
