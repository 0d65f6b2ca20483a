"""What a model does on a prompt set, from its logits: next-token loss on held-out text and the
answer margins of a two-label set (e.g. the singular vs plural verb after an agreement prompt).

Pure capture (a loaded model and texts in, numpy out; no SQL, no jobs). The Training view
reads these numbers per checkpoint; ``backend.analysis.training`` turns margins into accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from backend.models import LoadedModel


def _batches(rows: Sequence[list[int]], size: int):
    """(input_ids, attention_mask, lengths) of right-padded batches of ``size`` rows, in order."""
    for b in range(0, len(rows), size):
        ids = rows[b : b + size]
        x = torch.zeros((len(ids), max(map(len, ids))), dtype=torch.long)
        mask = torch.zeros_like(x)
        for r, row in enumerate(ids):
            x[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
        yield x, mask, [len(r) for r in ids]


def answer_token(tok, word: str) -> int | None:
    """The single token of ``word`` (with a leading space first, as BPE vocabularies spell a
    word after another), or None when it is several tokens."""
    for s in (" " + word.strip(), word):
        ids = tok.encode(s, add_special_tokens=False)
        if len(ids) == 1:
            return int(ids[0])
    return None


def next_token_loss(
    lm: LoadedModel, texts: Sequence[str], eos: bool = True, batch: int = 32
) -> tuple[float, int]:
    """(summed next-token cross-entropy in nats, number of predicted tokens) over ``texts``,
    each tokenized as the model's tokenizer does (with its special tokens), plus the end-of-text
    token when ``eos`` and the tokenizer has one."""
    tok = lm.tokenizer
    add_eos = eos and tok.eos_token_id is not None
    end = [tok.eos_token_id] if add_eos else []
    rows = [tok(t)["input_ids"] + end for t in texts]
    total, n = 0.0, 0
    with torch.inference_mode():
        for x, mask, _ in _batches(rows, batch):
            logits = lm.model(input_ids=x.to(lm.device), attention_mask=mask.to(lm.device)).logits
            logp = torch.log_softmax(logits[:, :-1].float(), -1).cpu()
            tgt, keep = x[:, 1:], mask[:, 1:].bool()
            nll = -logp.gather(-1, tgt[..., None])[..., 0]
            total += float(nll[keep].double().sum())
            n += int(keep.sum())
    return total, n


def answer_margins(
    lm: LoadedModel, prompts: Sequence[str], pairs: Sequence[tuple[int, int]], batch: int = 64
) -> np.ndarray:
    """logit(a) − logit(b) at each prompt's last token for each answer pair (a, b) of token
    ids: float64 (n_prompts, n_pairs)."""
    a = torch.tensor([p[0] for p in pairs])
    b = torch.tensor([p[1] for p in pairs])
    out = []
    with torch.inference_mode():
        rows = [lm.tokenizer(t)["input_ids"] for t in prompts]
        for x, mask, lengths in _batches(rows, batch):
            logits = lm.model(input_ids=x.to(lm.device), attention_mask=mask.to(lm.device)).logits
            last = logits[torch.arange(len(lengths)), torch.tensor(lengths) - 1].float().cpu()
            out.append((last[:, a] - last[:, b]).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(pairs)))
