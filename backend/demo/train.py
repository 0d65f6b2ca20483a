"""Train the bundled demo models: `python -m backend.demo.train [--steps N] [--out DIR]`.

Saves three GPT-2 models with the same word-level tokenizer, loadable with
``AutoModelForCausalLM.from_pretrained(dir)``:
  demo            seed 0, trained
  demo-seed1      seed 1, trained on the same data (for cross-model similarity)
  demo-untrained  the seed-0 initialisation, before any step (the random-init control)
Seeded and deterministic on CPU (torch.use_deterministic_algorithms).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch

from backend.demo import corpus

log = logging.getLogger(__name__)
OUT = Path(__file__).parent / "models"
CONFIG = dict(n_layer=4, n_embd=128, n_head=4, n_positions=48, n_inner=512)
N_TRAIN = 60_000  # training sentences (the same for both seeds)
DATA_SEED = 1234


def build_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(corpus.vocabulary())}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>",
                                   bos_token="<bos>", eos_token="<eos>")


def build_model(tok, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **CONFIG)
    return GPT2LMHeadModel(cfg)


def encode(tok, texts: list[str]) -> list[list[int]]:
    enc = tok(texts, add_special_tokens=True)["input_ids"]
    return [ids + [tok.eos_token_id] for ids in enc]


def batches(data: list[list[int]], batch: int, seed: int, pad: int):
    g = torch.Generator().manual_seed(seed)
    while True:
        for idx in torch.randperm(len(data), generator=g).split(batch):
            rows = [data[i] for i in idx.tolist()]
            width = max(map(len, rows))
            x = torch.full((len(rows), width), pad)
            for r, ids in enumerate(rows):
                x[r, :len(ids)] = torch.tensor(ids)
            yield x


def train(model, data, steps: int, seed: int, pad: int, batch: int = 64, lr: float = 3e-3):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    model.train()
    t0 = time.time()
    for step, x in zip(range(steps), batches(data, batch, seed, pad)):
        labels = x.masked_fill(x == pad, -100)
        loss = model(input_ids=x, attention_mask=(x != pad).long(), labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            log.info("step %d loss %.3f (%.0f s)", step, loss.item(), time.time() - t0)
    model.eval()
    return time.time() - t0


def save(model, tok, path: Path, description: str, meta: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    (path / "layerscope.json").write_text(json.dumps({"description": description, **meta},
                                                     indent=2))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    tok = build_tokenizer()
    texts = [e.text for e in corpus.sentences(N_TRAIN, DATA_SEED)]
    data = encode(tok, texts)
    meta = {"config": CONFIG, "train_sentences": N_TRAIN, "data_seed": DATA_SEED,
            "steps": args.steps}
    untrained = build_model(tok, seed=0)
    save(untrained, tok, args.out / "demo-untrained",
         "The seed-0 initialisation of the demo model, never trained (random-init control).",
         {**meta, "seed": 0, "steps": 0})
    for name, seed in (("demo", 0), ("demo-seed1", 1)):
        model = build_model(tok, seed)
        secs = train(model, data, args.steps, seed, tok.pad_token_id)
        log.info("%s trained in %.0f s", name, secs)
        save(model, tok, args.out / name,
             f"Demo GPT-2 (4 layers, d=128) trained on LayerScope's synthetic language, "
             f"seed {seed}.", {**meta, "seed": seed, "train_seconds": round(secs)})


if __name__ == "__main__":
    main()
