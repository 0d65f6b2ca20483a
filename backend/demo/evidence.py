"""Evidence that the demo models are real: `python -m backend.demo.evidence [--quick]`.

Measures (1) held-out loss vs a unigram baseline, (2) agreement accuracy (the correct verb
form gets the higher probability), (3) a per-layer linear probe for each label, on the trained
model, its untrained twin and a shuffled-label control. Hidden states come from LayerScope's
own capture path (layer 0 = embeddings, layer L = after block L).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter

import numpy as np
import torch

from backend import models
from backend.capture import extract
from backend.demo import corpus
from backend.demo.sets import load_demo_set


def hidden_states(lm, texts: list[str]) -> list[torch.Tensor]:
    """(n_layers + 1, n_tokens, d) float32 per text, through backend.capture.extract.capture."""
    settings = extract.CaptureSettings(dtype="float32")
    items = [(str(i), t) for i, t in enumerate(extract.tokenize(lm.tokenizer, texts))]
    out: dict[str, torch.Tensor] = {}
    for batch in extract.capture(lm, items, settings, exact=True):
        for r in batch:
            out[r.run_id] = torch.from_numpy(r.hidden)
    return [out[str(i)] for i in range(len(texts))]


def heldout_loss(lm, n: int = 400) -> tuple[float, float]:
    """Mean next-token cross-entropy (nats) of the model and of a unigram model, on held-out
    sentences (prompts never seen in training)."""
    from backend.demo.train import DATA_SEED, N_TRAIN

    tok = lm.tokenizer
    counts = Counter()
    for e in corpus.sentences(min(N_TRAIN, 20_000), DATA_SEED):
        counts.update(tok(e.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    total = sum(counts.values())
    texts = [e.text for t in corpus.TASKS for e in corpus.demo_set(t, n // 5, 99)]
    model_nll, uni_nll, n_tok = 0.0, 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = tok(text)["input_ids"] + [tok.eos_token_id]
            x = torch.tensor([ids])
            logp = torch.log_softmax(lm.model(input_ids=x).logits[0, :-1].float(), -1)
            tgt = x[0, 1:]
            model_nll -= logp[torch.arange(len(tgt)), tgt].sum().item()
            uni_nll -= sum(math.log((counts[t] + 1) / (total + len(tok))) for t in tgt.tolist())
            n_tok += len(tgt)
    return model_nll / n_tok, uni_nll / n_tok


def agreement_accuracy(lm, prompts: list[str], labels: list[str], groups: list[str]) -> dict:
    """Share of (prompt, verb) pairs where the verb form matching the subject is more likely."""
    tok = lm.tokenizer
    pairs = [
        (tok.convert_tokens_to_ids(s), tok.convert_tokens_to_ids(p))
        for s, p in corpus.VERBS.items()
    ]
    hits: dict[str, list[bool]] = {}
    with torch.inference_mode():
        for text, label, group in zip(prompts, labels, groups):
            logits = lm.model(input_ids=torch.tensor([tok(text)["input_ids"]])).logits[0, -1]
            for sg, pl in pairs:
                ok = (logits[sg] > logits[pl]) if label == "singular" else (logits[pl] > logits[sg])
                hits.setdefault(group, []).append(bool(ok))
                hits.setdefault("all", []).append(bool(ok))
    return {g: float(np.mean(v)) for g, v in hits.items()}


def probe_curve(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Cross-validated accuracy per layer; folds split by prompt (``groups``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cv = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
    return np.array(
        [
            cross_val_score(clf, x[layer], y, groups=groups, cv=cv).mean()
            for layer in range(x.shape[0])
        ]
    )


def probe_data(lm, name: str, limit: int | None = None):
    """(layers, units, d), labels, groups: last token per prompt, or every token (depth)."""
    df = load_demo_set(name)
    if limit:
        df = df.iloc[:limit]
    hs = hidden_states(lm, df["text"].tolist())
    if name == "depth":  # per-token label; skip the <bos> position
        x = np.concatenate([h[:, 1:].numpy() for h in hs], axis=1)
        y = np.concatenate([np.array(t) for t in df["token_labels"]])
        g = np.concatenate([[i] * (h.shape[1] - 1) for i, h in enumerate(hs)])
        return x, y, g
    x = np.stack([h[:, -1].numpy() for h in hs], axis=1)
    return x, df["label"].to_numpy(), np.arange(len(df))


def measure(quick: bool = False) -> dict:
    torch.set_num_threads(2)
    trained = models.load_model("demo", dtype="float32")
    untrained = models.load_model("demo-untrained", dtype="float32")
    res: dict = {}
    res["loss"], res["unigram_loss"] = heldout_loss(trained, 100 if quick else 400)
    agr = load_demo_set("agreement")
    args = (agr["text"].tolist(), agr["label"].tolist(), agr["group"].fillna("").tolist())
    res["agreement"] = agreement_accuracy(trained, *args)
    res["agreement_untrained"] = agreement_accuracy(untrained, *args)
    rng = np.random.default_rng(0)
    res["probes"] = {}
    for name in ("agreement", "sentiment", "topic", "depth"):
        limit = 120 if quick else None
        x, y, g = probe_data(trained, name, limit)
        xu, _, _ = probe_data(untrained, name, limit)
        y_shuf = y.copy()
        for _ in [None]:  # shuffle labels across prompts, keeping each prompt's tokens together
            perm = rng.permutation(len(y_shuf))
            y_shuf = y_shuf[perm]
        res["probes"][name] = {
            "trained": probe_curve(x, y, g).round(3).tolist(),
            "untrained": probe_curve(xu, y, g).round(3).tolist(),
            "shuffled": probe_curve(x, y_shuf, g).round(3).tolist(),
            "majority": float(max(Counter(y).values()) / len(y)),
        }
    return res


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.quick), indent=2))


if __name__ == "__main__":
    main()
