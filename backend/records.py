"""What a capture produces and how runs are named: torch-free (numpy only).

The store, the Ray engine's driver, every read path and the checks before a job
(``tokenize``) import this module instead of ``capture.extract`` / ``capture.generate``, so
reading the cache never imports torch.
``CapturedRun.hidden`` is a numpy array in storage precision: float16 when the whole run fits
fp16's range, else float32 (the codec then stores each out-of-range layer as bf16 bits).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from backend.errors import LayerScopeError

FP16_MAX = 65504.0  #: the largest finite float16: a run beyond it is stored as bf16 bits

CAPTURE_VERSION = 1
GEN_VERSION = 2  #: bump when sampling changes what a seed produces (2: per-prompt seeds)


@dataclass(frozen=True)
class CaptureSettings:
    """Settings that change a prompt run's stored activations (they enter the run id)."""

    max_tokens: int | None = None  #: truncate longer prompts (flagged per run)
    dtype: str = "float32"  #: the torch dtype the model computed in

    def key(self) -> dict:
        return {"v": CAPTURE_VERSION, "max_tokens": self.max_tokens, "dtype": self.dtype}


def prompt_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def make_run_id(model_id: str, text: str, settings: dict, kind: str = "prompt") -> str:
    payload = json.dumps([model_id, kind, text, settings], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass
class CapturedRun:
    """One run's tokens and hidden states, ready for ``Store.ingest``."""

    run_id: str
    text: str
    token_ids: list[int]
    tokens: list[str]  #: decoded text of each token
    offsets: list[tuple[int, int]]  #: character span in ``text``; (-1, -1) when unknown
    special: list[bool]
    hidden: np.ndarray  #: (n_layers + 1, n_tokens, d_model), float16 or float32
    truncated: bool = False
    kind: str = "prompt"
    settings: dict = field(default_factory=dict)
    n_prompt_tokens: int | None = None  #: generation runs: where the prompt ends
    parent: str | None = None  #: generation runs: the id shared by the samples of one request
    sample: int | None = None
    seed: int | None = None

    @property
    def prompt_id(self) -> str:
        return prompt_id(self.text)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


MAX_TEMPERATURE = 100.0  #: beyond it every token is equally likely: noise, not sampling


@dataclass(frozen=True)
class Sampling:
    """How to sample. Everything but ``samples`` enters the run ids."""

    samples: int = 8  #: continuations per prompt
    max_new_tokens: int = 8  #: generated tokens per sample (fewer when <eos> comes first)
    temperature: float = 1.0  #: logits are divided by it (> 0)
    top_p: float = 1.0  #: nucleus sampling: smallest set of tokens with this much mass
    seed: int = 0  #: sample i uses sample_seed(seed, prompt text, i)

    def key(self) -> dict:
        """What identifies one sample's run besides its index (not how many were asked)."""
        d = asdict(self)
        d.pop("samples")
        return {"v": GEN_VERSION, **d}

    def validate(self) -> None:
        if not 1 <= self.samples <= 256:
            raise LayerScopeError("Ask for between 1 and 256 samples per prompt.")
        if not 1 <= self.max_new_tokens <= 4096:
            raise LayerScopeError("Ask for between 1 and 4096 new tokens.")
        if not 0 < self.temperature <= MAX_TEMPERATURE:
            raise LayerScopeError(
                f"Temperature must be above 0 and at most {MAX_TEMPERATURE:g} "
                "(1.0 samples the model as is)."
            )
        if not 0 < self.top_p <= 1:
            raise LayerScopeError("Top-p must be in (0, 1]; 1 keeps every token.")
        if self.seed < 0:
            raise LayerScopeError("The seed must be 0 or more.")

    @classmethod
    def from_options(cls, options: dict) -> Sampling:
        return cls(**{k: options[k] for k in cls.__dataclass_fields__ if k in options})


def sample_seed(seed: int, text: str, i: int) -> int:
    """The generator seed of sample ``i`` of prompt ``text``: the first 8 bytes of
    sha256(f"{seed}\x00{i}\x00{text}") as a 63-bit integer (stable across runs, machines and
    Python versions, unlike ``hash``)."""
    h = hashlib.sha256(f"{int(seed)}\x00{int(i)}\x00{text}".encode()).digest()
    return int.from_bytes(h[:8], "big") >> 1


def sample_run_id(model_id: str, text: str, s: Sampling, i: int, dtype: str) -> str:
    settings = {**s.key(), "sample": i, "dtype": dtype}
    return make_run_id(model_id, text, settings, kind="generation")


def request_id(model_id: str, text: str, s: Sampling, dtype: str) -> str:
    """The ``parent`` shared by every sample of (model, prompt, sampling settings, dtype)."""
    return make_run_id(model_id, text, {**s.key(), "dtype": dtype}, kind="request")


@dataclass
class Tokenized:
    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    special: list[bool]
    truncated: bool
    n_full: int  #: length before truncation


def tokenize(tokenizer, texts: Sequence[str], max_tokens: int | None = None) -> list[Tokenized]:
    """Tokenize with the model's special tokens, offsets where the tokenizer has them."""
    fast = getattr(tokenizer, "is_fast", False)
    enc = tokenizer(
        list(texts), add_special_tokens=True, return_offsets_mapping=fast, truncation=False
    )
    special_ids = set(tokenizer.all_special_ids)
    out = []
    for i, text in enumerate(texts):
        ids = list(enc["input_ids"][i])
        offs = [tuple(o) for o in enc["offset_mapping"][i]] if fast else [(-1, -1)] * len(ids)
        n_full = len(ids)
        truncated = max_tokens is not None and n_full > max_tokens
        if truncated:
            ids, offs = ids[:max_tokens], offs[:max_tokens]
        # special = added by the tokenizer (bos, eos, ...), not read from the text: an unknown
        # word becomes <unk>, a special id, but it stands for text and keeps its offsets
        special = [t in special_ids and not (fast and o[1] > o[0]) for t, o in zip(ids, offs)]
        offs = [(-1, -1) if s else o for o, s in zip(offs, special)]
        out.append(Tokenized(text, ids, offs, special, truncated, n_full))
    return out
