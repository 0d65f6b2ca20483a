"""Train the bundled demo models: `python -m backend.demo.train [--steps N] [--out DIR]`.

Saves three GPT-2 models with the same word-level tokenizer, loadable with
``AutoModelForCausalLM.from_pretrained(dir)``:
  demo            seed 0, trained
  demo-seed1      seed 1, trained on the same data (for cross-model similarity)
  demo-untrained  the seed-0 initialisation, before any step (the random-init control)
  demo-checkpoints/step<N>  seed 0 along its training (fp16), loadable as `demo@step<N>`
                  (`--only demo-checkpoints`: train seed 0 for them without replacing demo)
Seeded and deterministic on CPU (torch.use_deterministic_algorithms, fixed thread count).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
from pathlib import Path

import torch

from backend.demo import corpus

log = logging.getLogger(__name__)
OUT = Path(__file__).parent / "models"
CONFIG = {"n_layer": 4, "n_embd": 128, "n_head": 4, "n_positions": 64, "n_inner": 512}
N_TRAIN = 120_000  # training sentences (the same for both seeds)
DATA_SEED = 1234
STEPS, BATCH, LR = 3000, 64, 3e-3
# Steps at which seed 0 is also saved as a checkpoint (`demo@step<N>`), dense around the jump
# (the agreement probe rises from step ~550, the behaviour at ~750). Step 0 is demo-untrained
# (the same initialisation, not written again); the others are written in fp16 under
# CHECKPOINT_DIR/step<N>/, the last step included.
CHECKPOINT_STEPS = (0, 200, 500, 600, 700, 750, 800, 1500, 3000)
CHECKPOINT_DIR = "demo-checkpoints"


def build_tokenizer():
    """Word-level tokenizer over ``corpus.vocabulary()``; prepends <bos> (an attention sink)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(corpus.vocabulary())}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # words = whitespace-separated words
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>", model_max_length=CONFIG["n_positions"],
    )  # fmt: skip


def build_model(tok, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        **CONFIG,
    )  # fmt: skip
    return GPT2LMHeadModel(cfg)


def encode(tok, texts: list[str]) -> list[list[int]]:
    enc = tok(texts, add_special_tokens=True)["input_ids"]
    return [ids + [tok.eos_token_id] for ids in enc]


def batches(data: list[list[int]], batch: int, seed: int, pad: int):
    """Endless padded batches (batch, width); similar lengths share a batch (less padding)."""
    rng = random.Random(seed)
    order = list(range(len(data)))
    while True:
        rng.shuffle(order)
        chunks = []
        for c in range(0, len(order), batch * 32):  # sort within windows of 32 batches
            window = sorted(order[c : c + batch * 32], key=lambda i: len(data[i]))
            chunks += [window[b : b + batch] for b in range(0, len(window), batch)]
        rng.shuffle(chunks)
        for idx in chunks:
            rows = [data[i] for i in idx]
            x = torch.full((len(rows), max(map(len, rows))), pad)
            for r, ids in enumerate(rows):
                x[r, : len(ids)] = torch.tensor(ids)
            yield x


def train(model, data, steps: int, seed: int, pad: int, batch: int = BATCH, lr: float = LR,
          checkpoint=None, at: tuple[int, ...] = ()):  # fmt: skip
    """AdamW with warm-up and cosine decay; returns wall seconds.

    ``checkpoint(step, model)`` is called when ``step`` (optimizer updates done so far) is in
    ``at``: before the first update for 0, after the last for ``steps``. It only reads the
    weights, so a run with checkpoints ends in the same weights as one without.
    """
    at = set(at)
    if checkpoint is not None and 0 in at:
        checkpoint(0, model)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
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
        if checkpoint is not None and step + 1 in at:
            checkpoint(step + 1, model)
        if step % 250 == 0 or step == steps - 1:
            log.info("step %d loss %.3f (%.0f s)", step, loss.item(), time.time() - t0)
    model.eval()
    return time.time() - t0


def save(model, tok, path: Path, description: str, meta: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    info = {"description": description, **meta}
    (path / "layerscope.json").write_text(json.dumps(info, indent=2) + "\n")


def save_checkpoint(model, tok, path: Path, step: int, seed: int) -> None:
    """The weights in fp16 safetensors (tied lm_head not repeated) with the fp32 model's config,
    so the checkpoint loads and computes in float32 like `demo`."""
    from safetensors.torch import save_file

    save(model, tok, path, f"The demo model (seed {seed}) after {step} training steps, fp16.",
         {"step": step, "seed": seed, "weights": "float16",
          "threads": torch.get_num_threads()})  # fmt: skip
    # the same tensors as save_pretrained wrote (tied lm_head left out), rounded to fp16
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    sd = model.state_dict()
    weights = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items() if k not in tied}
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})


def write_manifest(out: Path, at: tuple[int, ...], steps: int) -> None:
    """``<out>/demo-checkpoints/checkpoints.json``: step -> directory (relative to ``out``)
    for ``backend.models.checkpoints``; step 0 is demo-untrained."""
    dirs = {0: "demo-untrained", **{n: f"{CHECKPOINT_DIR}/step{n}" for n in at}}
    info = {"model": "demo", "seed": 0, "steps": steps,
            "checkpoints": {str(n): dirs[n] for n in sorted(dirs)}}  # fmt: skip
    (out / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
    (out / CHECKPOINT_DIR / "checkpoints.json").write_text(json.dumps(info, indent=2) + "\n")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", action="append",
                   choices=["demo", "demo-seed1", "demo-untrained", "demo-checkpoints"],
                   help="build only these models (repeatable); default: all three, with the "
                   "checkpoints of demo")  # fmt: skip
    p.add_argument("--checkpoint-steps", default=",".join(map(str, CHECKPOINT_STEPS)),
                   help="comma-separated steps at which seed 0 is saved to <out>/"
                   f"{CHECKPOINT_DIR}/step<N> (step 0 is demo-untrained, not written "
                   "again); empty: none")  # fmt: skip
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    only = set(args.only or ["demo", "demo-seed1", "demo-untrained", "demo-checkpoints"])
    tok = build_tokenizer()
    data = encode(tok, [e.text for e in corpus.sentences(N_TRAIN, DATA_SEED)])
    meta = {"config": CONFIG, "vocab_size": len(tok), "train_sentences": N_TRAIN,
            "data_seed": DATA_SEED, "steps": args.steps, "batch": BATCH, "lr": LR}  # fmt: skip
    arch = f"GPT-2, {CONFIG['n_layer']} layers, d_model {CONFIG['n_embd']}"
    if "demo-untrained" in only:
        save(build_model(tok, seed=0), tok, args.out / "demo-untrained",
             f"The demo model's seed-0 initialisation ({arch}), never trained: the "
             "random-init control.", {**meta, "seed": 0, "steps": 0})  # fmt: skip
    for name, seed in (("demo", 0), ("demo-seed1", 1)):
        ckpts = name == "demo" and "demo-checkpoints" in only
        if name not in only and not ckpts:
            continue
        model = build_model(tok, seed)
        at = tuple(int(x) for x in args.checkpoint_steps.split(",") if x.strip())
        at = tuple(n for n in at if 0 < n <= args.steps) if ckpts else ()
        ckpt = lambda n, m, s=seed: save_checkpoint(  # noqa: E731
            m, tok, args.out / CHECKPOINT_DIR / f"step{n}", n, s
        )
        secs = train(model, data, args.steps, seed, tok.pad_token_id, checkpoint=ckpt, at=at)
        log.info("%s trained in %.0f s", name, secs)
        if at:
            write_manifest(args.out, at, args.steps)
        if name not in only:
            continue
        save(model, tok, args.out / name,
             f"Demo model ({arch}) trained on LayerScope's synthetic language, seed {seed}.",
             {**meta, "seed": seed, "train_seconds": round(secs)})  # fmt: skip


if __name__ == "__main__":
    main()
