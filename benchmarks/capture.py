"""Capture speed and storage: ours vs our bare forward vs naive HF, TransformerLens, nnsight.

    python benchmarks/capture.py                 # 256 prompts of 8..256 tokens, 3 repeats
    python benchmarks/capture.py --quick         # smoke run: a few short prompts, 1 repeat

One process, one model (GPT-2-small shape: 12 layers, d=768, 12 heads, vocab 50257, random
weights from GPT2Config, save_pretrained to a temp dir, a 50257-word word-level tokenizer) and
one prompt set (random token ids, variable lengths, written as "w<id>" words so the tokenizer
gives the ids back). Methods run interleaved (ours, bare, naive, ...; then again) so that load
from other processes on the shared machine hits all of them alike; medians are reported.

- ours: ``Worker.run`` of an extract job into a fresh DuckDB file on disk (tokenize, run ids,
  budget estimate, capture in model dtype ``auto``, pipelined ingest), then CHECKPOINT;
- bare: our batching and dtype, ``model.base`` forward only, nothing captured (the limit);
- naive: AutoModelForCausalLM fp32, batches of 16 in input order, right padded,
  output_hidden_states=True, every hidden state to numpy;
- tlens: TransformerLens 4 ``TransformerBridge.boot_transformers(path, hf_model=...)``,
  ``run_with_cache`` with a names_filter for the 13 residual points, same batches as naive;
- nnsight: ``LanguageModel(model, tokenizer=...)``, a trace per batch saving the input of
  block 0 and every block output, same batches as naive.
Peers compute in fp32 (their default) unless --peer-dtype says otherwise. Before timing, each
peer's capture of the first prompt is compared with what ours stored (cosine per layer).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
warnings.filterwarnings("ignore")

import pandas as pd

from backend import models
from backend.capture import extract
from backend.jobs.base import JobSpec
from backend.jobs.worker import Worker
from backend.store import Store

N_LAYERS, D, HEADS, VOCAB = 12, 768, 12, 50257
PEER_BATCH = 16
METHODS = ("ours", "bare", "naive", "tlens", "nnsight")
LABELS = {
    "ours": "ours end-to-end (job: capture + DuckDB)",
    "bare": "our bare forward",
    "naive": "naive HF (padded, hidden_states)",
    "tlens": "TransformerLens 4 run_with_cache",
    "nnsight": "nnsight trace + save",
}


# -- fixtures -------------------------------------------------------------------------------
def make_model(path: Path) -> None:
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tkm
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=N_LAYERS, n_embd=D, n_head=HEADS, vocab_size=VOCAB)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tk = Tokenizer(tkm.WordLevel({f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="w0", pad_token="w0", bos_token="w50256", eos_token="w50256"
    ).save_pretrained(path)


def make_prompts(n: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(10, 50000, int(rng.integers(lo, hi + 1))).tolist() for _ in range(n)]


def padded(batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    w = max(len(p) for p in batch)
    ids = torch.zeros((len(batch), w), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(batch):
        ids[r, : len(p)] = torch.tensor(p)
        mask[r, : len(p)] = 1
    return ids, mask


def in_order(prompts: list[list[int]]):
    for s in range(0, len(prompts), PEER_BATCH):
        yield prompts[s : s + PEER_BATCH]


# -- the methods: each takes the prompts, returns (seconds, layers of prompt 0 or None) -----
def ours(model_dir: Path, prompts, work: Path):
    texts = [" ".join(f"w{i}" for i in p) for p in prompts]
    db = work / f"ours-{time.monotonic_ns()}.duckdb"
    with Store(db) as s:
        s.save_prompt_set("bench", pd.DataFrame({"text": texts}))
        t0 = time.perf_counter()
        p = Worker(s).run(JobSpec(model=str(model_dir), set_name="bench"))
        s.con.execute("CHECKPOINT")
        dt = time.perf_counter() - t0
        if p.status != "done" or p.result["runs"] != len(set(texts)):
            raise RuntimeError(f"our job did not finish: {p.status} {p.message}")
        lm = models.get_model(str(model_dir))
        first = s.run_layers(s.set_runs("bench", lm.info.model_id)["run_id"].iloc[0])
    ours.last_db = db
    return dt, first


def bare(lm, prompts):
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in extract.plan_batches([len(p) for p in prompts], JobSpec.batch_tokens):
            ids, mask = padded([prompts[i] for i in b])
            lm.base(input_ids=ids, attention_mask=mask, use_cache=False)
    return time.perf_counter() - t0, None


def naive(hf, prompts):
    first, t0 = None, time.perf_counter()
    with torch.inference_mode():
        for batch in in_order(prompts):
            ids, mask = padded(batch)
            out = hf(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            hs = [h.float().numpy() for h in out.hidden_states]
            if first is None:
                first = np.stack(hs[:-1])[:, 0, : len(batch[0])]  # last entry has ln_f applied
    return time.perf_counter() - t0, first


RESID = [f"blocks.{i}.hook_resid_post" for i in range(N_LAYERS)]


def tlens(bridge, prompts):
    names = ["blocks.0.hook_resid_pre", *RESID]
    first, t0 = None, time.perf_counter()
    with torch.inference_mode():
        for batch in in_order(prompts):
            ids, mask = padded(batch)
            _, cache = bridge.run_with_cache(
                ids, attention_mask=mask, names_filter=names, return_type=None
            )
            hs = [cache[n].float().numpy() for n in names]
            if first is None:
                first = np.stack(hs)[:, 0, : len(batch[0])]
    return time.perf_counter() - t0, first


def nnsight_run(nn_model, prompts):
    import nnsight

    first, t0 = None, time.perf_counter()
    with torch.inference_mode():
        for batch in in_order(prompts):
            ids, mask = padded(batch)
            with nn_model.trace({"input_ids": ids, "attention_mask": mask}):
                saved = nnsight.save([nn_model.transformer.h[0].input])
                for blk in nn_model.transformer.h:
                    saved.append(blk.output)
            hs = [(h[0] if isinstance(h, tuple) else h).float().numpy() for h in saved]
            if first is None:
                first = np.stack(hs)[:, 0, : len(batch[0])]
    return time.perf_counter() - t0, first


def setup_peers(model_dir: Path, dtype: torch.dtype, want: list[str]) -> tuple[dict, dict]:
    """Each peer gets its own HF model instance (TransformerLens switches attention to eager)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def hf():
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()

    fns, notes = {}, {}
    if "naive" in want:
        m = hf()
        fns["naive"] = lambda p: naive(m, p)
    if "tlens" in want:
        try:
            from transformer_lens.model_bridge import TransformerBridge

            bridge = TransformerBridge.boot_transformers(
                str(model_dir),
                hf_model=hf(),
                tokenizer=AutoTokenizer.from_pretrained(model_dir),
                device="cpu",
                dtype=dtype,
            )
            fns["tlens"] = lambda p: tlens(bridge, p)
            notes["tlens"] = f"transformer-lens {importlib.metadata.version('transformer-lens')}"
        except Exception as e:  # reported, never faked
            notes["tlens"] = f"not run: {type(e).__name__}: {str(e)[:120]}"
    if "nnsight" in want:
        try:
            import nnsight
            from nnsight import LanguageModel

            nn_model = LanguageModel(hf(), tokenizer=AutoTokenizer.from_pretrained(model_dir))
            fns["nnsight"] = lambda p: nnsight_run(nn_model, p)
            notes["nnsight"] = f"nnsight {nnsight.__version__}"
        except Exception as e:
            notes["nnsight"] = f"not run: {type(e).__name__}: {str(e)[:120]}"
    return fns, notes


# -- storage and reads ----------------------------------------------------------------------
def timed(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def read_benchmarks(db: Path, n_values: int, n_read_tokens: int, work: Path) -> dict:
    """Bytes per value of our file; all layers of the longest run; one layer of N tokens
    (a synthetic store of random fp16-range runs with the same shapes, no forward pass)."""
    with Store(db) as s:
        s.con.execute("CHECKPOINT")
        runs = s._df("SELECT run_id, n_tokens FROM runs ORDER BY n_tokens DESC")
        longest = runs["run_id"].iloc[0]
        s.run_layers(longest)
        t_run = timed(lambda: s.run_layers(longest), 21)
        blob = s.summary()["activation_bytes"]
    out = {
        "file_bpv": db.stat().st_size / n_values,
        "blob_bpv": blob / n_values,
        "run_ms": t_run * 1e3,
        "run_tokens": int(runs["n_tokens"].iloc[0]),
    }
    big = work / "reads.duckdb"
    rng = np.random.default_rng(1)
    pool = torch.randn(N_LAYERS + 1, 256, D, dtype=torch.float32)
    ids, total, k = [], 0, 0
    with Store(big) as s:
        while total < n_read_tokens:
            batch = []
            for _ in range(64):
                n = min(int(rng.integers(8, 257)), n_read_tokens - total) or 1
                rid, k, total = f"r{k}", k + 1, total + n
                batch.append(
                    extract.CapturedRun(
                        rid,
                        rid,
                        [0] * n,
                        ["w0"] * n,
                        [(-1, -1)] * n,
                        [False] * n,
                        pool[:, :n].numpy(),
                    )
                )
                ids.append(rid)
                if total >= n_read_tokens:
                    break
            s.ingest("m", batch)
        s.con.execute("CHECKPOINT")
    with Store(big) as s:
        s.layer(ids, 6)
        out["layer_s"] = timed(lambda: s.layer(ids, 6), 3)
        out["layer_tokens"] = total
        out["run_ms_big"] = timed(lambda: s.run_layers(ids[len(ids) // 2]), 21) * 1e3
    big.unlink()
    return out


def cosine_check(ref: np.ndarray, got: np.ndarray) -> float:
    """Smallest per-layer cosine between two (layers, n, d) captures of prompt 0."""
    a, b = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1)
    return float(
        min(
            (x @ y) / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-30)
            for x, y in zip(a, b.astype(np.float64))
        )
    )


# -- main -----------------------------------------------------------------------------------
def machine() -> str:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")  # noqa: SIM115
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, bf16 kernels: {models.cpu_has_bf16()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--min-len", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--read-tokens", type=int, default=100_000)
    ap.add_argument("--skip", nargs="*", default=[], choices=METHODS)
    ap.add_argument("--peer-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--quick", action="store_true", help="8 prompts of 8..48 tokens, 1 repeat")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.max_len, args.repeat, args.read_tokens = 8, 48, 1, 3000
    work = Path(tempfile.mkdtemp(prefix="layerscope-bench-"))
    model_dir = work / "gpt2-small-random"
    make_model(model_dir)
    prompts = make_prompts(args.prompts, args.min_len, args.max_len)
    n_tok = sum(map(len, prompts))
    want = [m for m in METHODS if m not in args.skip]
    lm = models.get_model(str(model_dir))  # the worker's process-wide cache, warmed
    fns, notes = setup_peers(model_dir, getattr(torch, args.peer_dtype), want)
    fns = {"ours": lambda p: ours(model_dir, p, work), "bare": lambda p: bare(lm, p), **fns}
    fns = {m: fns[m] for m in METHODS if m in fns and m in want}
    print(f"machine: {machine()}")
    print(
        f"model: GPT-2-small shape, random weights; ours dtype {lm.dtype}, peers "
        f"{args.peer_dtype}; {len(prompts)} prompts, {n_tok} tokens "
        f"({args.min_len}..{args.max_len}); {args.repeat} repeats, medians"
    )
    # correctness first: each peer's layers of prompt 0 against what ours stored
    _, ref = fns["ours"](prompts[:1]) if "ours" in fns else (0, None)
    for m, f in fns.items():
        if m not in ("ours", "bare") and ref is not None:
            notes[m] = (
                f"{notes.get(m, '')} min cos vs ours {cosine_check(ref, f(prompts[:1])[1]):.4f}"
            )
    times = {m: [] for m in fns}
    for _ in range(args.repeat):  # interleaved
        for m, f in fns.items():
            times[m].append(f(prompts)[0])
    med = {m: statistics.median(v) for m, v in times.items()}
    print(f"\n{'method':44} {'median s':>9} {'tok/s':>8}  ours is   target")
    targets = {"bare": 0.9, "naive": 3.0, "tlens": 3.0, "nnsight": 3.0}
    result = {"tokens": n_tok, "median_s": med, "ratios": {}, "notes": notes}
    for m in METHODS:
        if m not in med:
            if m in notes:
                print(f"{LABELS[m]:44} {notes[m]}")
            continue
        line = f"{LABELS[m]:44} {med[m]:9.2f} {n_tok / med[m]:8.0f}"
        if m != "ours" and "ours" in med:
            r = med[m] / med["ours"]
            result["ratios"][m] = r
            ok = "met" if r >= targets[m] else "MISSED"
            line += f"  {r:5.2f}x   >= {targets[m]}x {ok}"
        print(line + (f"   [{notes[m].strip()}]" if m in notes else ""))
    if "ours" in med:
        n_values = n_tok * (N_LAYERS + 1) * D
        rd = read_benchmarks(ours.last_db, n_values, args.read_tokens, work)
        result.update(rd)
        print(
            f"\nbytes per stored value (whole DuckDB file after CHECKPOINT): "
            f"{rd['file_bpv']:.3f}  (target <= 2.05 {'met' if rd['file_bpv'] <= 2.05 else 'MISSED'});"
            f" activation blobs alone {rd['blob_bpv']:.3f}"
        )
        print(
            f"all {N_LAYERS + 1} layers of one run ({rd['run_tokens']} tokens): "
            f"{rd['run_ms']:.1f} ms, in a {rd['layer_tokens']}-token store "
            f"{rd['run_ms_big']:.1f} ms  (target < 20 ms)"
        )
        print(
            f"one layer of {rd['layer_tokens']} tokens: {rd['layer_s']:.3f} s "
            f"(target < 0.5 s for 100k tokens)"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return result


if __name__ == "__main__":
    main()
