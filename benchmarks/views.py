"""Acceptance tier: every view's first render and a cached interaction, at real model sizes.

    python benchmarks/views.py                                   # all four, 20k tokens each
    python benchmarks/views.py --models gpt2,pythia --tokens 20000
    python benchmarks/views.py --models llama --tokens 2000      # the 1B model: fewer tokens
    python benchmarks/views.py --small                           # real shapes scaled down

Models are built from the REAL configs of GPT-2 small, Pythia-160m, Qwen2.5-0.5B and
Llama-3.2-1B (values written below: widths, depths, heads, kv heads, MLP sizes, vocabularies,
rope settings, tied embeddings, the checkpoint's dtype), with random weights (seed 0),
``save_pretrained`` to a work directory next to a word-level tokenizer of the real vocabulary
size (``w0 .. w{V-1}``; Llama's adds its BOS token like the real one). A prompt set of random
words (~``--tokens`` tokens, 16–128 per prompt, two labels, four groups) goes through the real
extract job (``Worker.run`` of a ``JobSpec``, DuckDB file on disk) in the model's dtype auto.

Then, per view, the server work of a page: ``backend.views.<x>.compute(store, Request)`` (or
the function the page calls), the ``backend.figures.<x>`` figure, ``fig.to_json()``.
"first" = the first render; "cached" = the interaction the page answers from its caches (a
``st.cache_data`` hit is an unpickle, then the figure again; a colour / layer / head change
redraws from the cached result). Loading the model (the page's ``st.cache_resource``) is timed
apart. Targets: first ≤ 2 s at GPT-2-small size (≤ 5 s at 1B), cached ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import gc
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

import pandas as pd

#: the real configs (config.json of the hub checkpoints), random weights
REAL = {
    "gpt2": {  # openai-community/gpt2
        "model_type": "gpt2",
        "n_layer": 12,
        "n_embd": 768,
        "n_head": 12,
        "n_inner": None,  # 4 * n_embd
        "n_positions": 1024,
        "vocab_size": 50257,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "torch_dtype": "float32",
    },
    "pythia": {  # EleutherAI/pythia-160m
        "model_type": "gpt_neox",
        "num_hidden_layers": 12,
        "hidden_size": 768,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "vocab_size": 50304,
        "max_position_embeddings": 2048,
        "rotary_pct": 0.25,
        "partial_rotary_factor": 0.25,
        "rotary_emb_base": 10000,
        "rope_theta": 10000,
        "use_parallel_residual": True,
        "hidden_act": "gelu",
        "layer_norm_eps": 1e-5,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": "float16",
    },
    "qwen": {  # Qwen/Qwen2.5-0.5B
        "model_type": "qwen2",
        "num_hidden_layers": 24,
        "hidden_size": 896,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
        "torch_dtype": "bfloat16",
    },
    "llama": {  # meta-llama/Llama-3.2-1B
        "model_type": "llama",
        "num_hidden_layers": 16,
        "hidden_size": 2048,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": {
            "factor": 32.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
        "rms_norm_eps": 1e-5,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": 128000,
        "eos_token_id": 128001,
        "torch_dtype": "bfloat16",
    },
}
ADDS_BOS = {"llama"}  #: the real tokenizer puts BOS in front of every prompt

_WIDTH = ("n_embd", "hidden_size")
_DEPTH = ("n_layer", "num_hidden_layers")


SMALL_VOCAB = 4096


def small_config(name: str) -> dict:
    """The real config scaled down: 2 layers, d = 64, 4 heads, a vocabulary of 4,096 with the
    special tokens moved along with the end of the vocabulary; rope and the rest as is."""
    cfg = dict(REAL[name])
    cfg["vocab_size"] = SMALL_VOCAB
    for k in ("bos_token_id", "eos_token_id"):
        cfg[k] = _small_id(name, cfg[k])
    for k in _WIDTH:
        if k in cfg:
            cfg[k] = 64
    for k in _DEPTH:
        if k in cfg:
            cfg[k] = 2
    if "n_head" in cfg:
        cfg["n_head"] = 4
    else:
        cfg["num_attention_heads"] = 4
    if "num_key_value_heads" in cfg:
        cfg["num_key_value_heads"] = 2
    if "head_dim" in cfg:
        cfg["head_dim"] = 16
    if "intermediate_size" in cfg:
        cfg["intermediate_size"] = 128
    return cfg


SPECIAL = {  #: the real special tokens at their real ids
    "gpt2": {50256: "<|endoftext|>"},
    "pythia": {0: "<|endoftext|>"},
    "qwen": {151643: "<|endoftext|>"},
    "llama": {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>"},
}
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _small_id(name: str, i: int) -> int:
    return i if i < SMALL_VOCAB else i - REAL[name]["vocab_size"] + SMALL_VOCAB


def specials(name: str, small: bool = False) -> dict[int, str]:
    return {_small_id(name, i) if small else i: t for i, t in SPECIAL[name].items()}


def bpe_vocab(
    name: str, small: bool = False
) -> tuple[dict[str, int], list[tuple[str, str]], list[str]]:
    """A byte-level BPE vocabulary of the real size: the 256 byte symbols, then words of one
    to four letters after a space ("Ġa", "Ġab", "Ġabc", "Ġabcd", ...), each built by one merge
    from its prefix, and the model's special tokens at their real ids. Every word of the
    prompts (`` abcd``) is one token for the real pre-tokenizers (GPT-2's regex, Qwen's)
    -> (vocab, merges, words: the 3-4 letter words without the Ġ, usable in prompts).
    ``small``: the same over a vocabulary of SMALL_VOCAB."""
    from tokenizers import pre_tokenizers

    size = SMALL_VOCAB if small else REAL[name]["vocab_size"]
    special = specials(name, small)
    n_regular = size - len(special)
    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    merges, words, level = [], [], ["Ġ"]
    while len(tokens) < n_regular:
        nxt = []
        for prefix in level:
            for c in LETTERS:
                if len(tokens) == n_regular:
                    break
                tokens.append(prefix + c)
                merges.append((prefix, c))
                nxt.append(prefix + c)
                if len(prefix) >= 3 or (small and len(prefix) >= 2):
                    words.append(prefix[1:] + c)
        level = nxt
    ids = [i for i in range(size) if i not in special]
    vocab = dict(zip(tokens, ids))
    vocab.update({t: i for i, t in special.items()})
    return vocab, merges, words


def make_model(name: str, path: Path, small: bool = False) -> Path:
    """Build (once) the model and its tokenizer in ``path``; returns ``path``."""
    if (path / "config.json").exists() and (path / "tokenizer.json").exists():
        return path
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers import models as tkm
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    cfg = small_config(name) if small else dict(REAL[name])
    dtype = getattr(torch, cfg["torch_dtype"])
    kind = cfg.pop("model_type")
    config = AutoConfig.for_model(kind, **cfg)
    config.dtype = dtype
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    del model
    gc.collect()
    vocab, merges, _ = bpe_vocab(name, small)
    tk = Tokenizer(tkm.BPE(vocab, merges, ignore_merges=name == "llama"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    special = specials(name, small)
    tk.add_special_tokens([AddedToken(t, special=True) for t in special.values()])
    bos, eos = special[cfg["bos_token_id"]], special[cfg["eos_token_id"]]
    if name in ADDS_BOS:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, cfg["bos_token_id"])]
        )
    PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=eos, unk_token=eos
    ).save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    return path


def prompt_set(n_tokens: int, words: list[str], seed: int = 0) -> pd.DataFrame:
    """Prompts of 16-128 random words totalling about ``n_tokens`` tokens; labels a/b and
    four groups (for probes and colouring)."""
    rng = np.random.default_rng(seed)
    texts, total = [], 0
    while total < n_tokens:
        n = int(min(rng.integers(16, 129), max(n_tokens - total, 8)))
        texts.append(" ".join(words[i] for i in rng.integers(0, len(words), n)))
        total += n + 3  # the first word has no space before it: four letter tokens
    return pd.DataFrame(
        {
            "text": texts,
            "label": rng.choice(["a", "b"], len(texts)),
            "group": [f"g{i % 4}" for i in range(len(texts))],
        }
    )


def patch_pair(words: list[str], n: int = 20, seed: int = 1) -> tuple[str, str]:
    """Two prompts of ``n`` words differing in one word (a patching pair)."""
    ids = np.random.default_rng(seed).integers(0, len(words), n)
    other = ids.copy()
    other[n // 3] = (ids[n // 3] + 7) % len(words)
    return " ".join(words[i] for i in ids), " ".join(words[i] for i in other)


@dataclass
class Row:
    view: str
    first: float  #: seconds: compute + figure + to_json, first time
    compute: float  #: of which compute
    cached: float | None  #: seconds: the cached interaction (median)
    interaction: str
    note: str = ""
    fig_bytes: int = 0


@dataclass
class Harness:
    """One model's extracted set and its views. ``repeat``: cached-interaction repeats."""

    store: object
    model_dir: Path
    model_id: str
    set_name: str
    words: list[str]
    repeat: int = 3
    rows: list[Row] = field(default_factory=list)
    log: Callable[[str], None] | None = None
    profile: bool = False  #: cProfile each first render; the top functions go in the note

    def measure(
        self,
        view: str,
        compute: Callable[[], object],
        figure: Callable[[object], object],
        interaction: str,
        again: Callable[[object, bytes], object] | None = None,
        note: str = "",
    ) -> object:
        """First render = compute + figure + to_json (+ the pickle st.cache_data stores);
        cached = ``again(result, pickled)`` (it returns the figure), median of ``repeat``."""
        prof = None
        if self.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t0 = time.perf_counter()
        res = compute()
        t1 = time.perf_counter()
        js = figure(res).to_json()
        blob = pickle.dumps(res)
        first = time.perf_counter() - t0
        if prof is not None:
            prof.disable()
            note = "; ".join(filter(None, [note, "top: " + top_functions(prof)]))
        cached = None
        if again is not None:
            ts = []
            for _ in range(self.repeat):
                t = time.perf_counter()
                again(res, blob).to_json()
                ts.append(time.perf_counter() - t)
            cached = statistics.median(ts)
        self.rows.append(Row(view, first, t1 - t0, cached, interaction, note, len(js)))
        if self.log is not None:
            self.log(
                f"  {view}: first {first:.2f} s (compute {t1 - t0:.2f}), cached "
                + ("—" if cached is None else f"{cached * 1000:.0f} ms")
            )
        return res


def warm_imports() -> None:
    """What a running server has imported already (the views import these lazily)."""
    import plotly.express  # noqa: F401
    import plotly.graph_objects as go
    import scipy.cluster.hierarchy
    import scipy.linalg
    import scipy.optimize
    import scipy.spatial.distance
    import scipy.special
    import scipy.stats  # noqa: F401
    import sklearn.metrics
    import sklearn.model_selection
    import sklearn.neighbors  # noqa: F401

    go.Figure(go.Heatmap(z=[[0, 1]])).to_json()


def top_functions(prof, n: int = 3) -> str:
    """The n functions with the most own time (tottime) in a profile: where a render goes."""
    import pstats

    st = pstats.Stats(prof)
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    total = sum(v[2] for v in st.stats.values()) or 1.0
    out = []
    for (file, _line, fn), v in rows:
        where = Path(file).name if file != "~" else ""
        out.append(f"{fn} ({where}) {v[2]:.2f} s = {v[2] / total:.0%}")
    return ", ".join(out)


def run_views(h: Harness, lm, only: set[str] | None = None) -> list[Row]:
    """Every view of the set (and patching / attention on one pair / prompt)."""
    from backend.figures import attention as FA
    from backend.figures import lens as FL
    from backend.figures import patching as FP
    from backend.figures import probes as FPr
    from backend.figures import similarity as FS
    from backend.figures import stats as FSt
    from backend.figures import trajectories as FT
    from backend.views import attention, lens, patching, probes, similarity, stats
    from backend.views import trajectories as TV

    warm_imports()
    s, mid, name = h.store, h.model_id, h.set_name
    n_layers = s.get_model(mid)["n_layers"]
    layers = tuple(range(n_layers + 1))
    runs = s.set_runs(name, mid)

    def want(v: str) -> bool:
        return only is None or v.split()[0] in only

    def unpickled_then(fn):
        return lambda res, blob: fn(pickle.loads(blob))

    # -- trajectories: the page's default (prompt units), and every token (sampled as the
    # page does above 100k points), PCA and aligned
    if want("trajectories"):
        req = TV.Request(
            model_id=mid,
            set_name=name,
            layers=layers,
            method="pca",
            unit="prompt",
            standardize=True,
        )
        h.measure(
            "trajectories pca, prompts",
            lambda: TV.compute(s, req),
            lambda r: FT.trajectory_figure(r.projection, r.meta, "label"),
            "colour change",
            lambda r, b: FT.trajectory_figure(r.projection, r.meta, "group"),
        )
        n_tok = int(runs["n_tokens"].sum())
        sample = TV.MAX_POINTS // len(layers) if n_tok * len(layers) > TV.MAX_POINTS else None
        for method in ("pca", "aligned"):
            req = TV.Request(
                model_id=mid,
                set_name=name,
                layers=layers,
                method=method,
                unit="token",
                standardize=True,
                max_runs=len(runs),
            )
            req = TV.Request(**{**req.__dict__, "sample": sample})
            h.measure(
                f"trajectories {method}, tokens",
                lambda req=req: TV.compute(s, req),
                lambda r: FT.trajectory_figure(r.projection, r.meta, "label"),
                "colour change",
                lambda r, b: FT.trajectory_figure(r.projection, r.meta, "group"),
                note=f"{sample:,} of {n_tok:,} tokens (page's sample)" if sample else "",
            )
    # -- similarity: layer x layer CKA over token units, prompt x prompt cosine
    if want("similarity"):
        for kind, units in (("layer-cka", "tokens"), ("prompt", "last")):
            req = similarity.Request(kind=kind, model_id=mid, set_name=name, units=units)
            rt = "layer" if kind.startswith("layer") else ""
            h.measure(
                f"similarity {kind}",
                lambda req=req: similarity.compute(s, req),
                lambda v, rt=rt: FS.similarity_figure(v.matrix, "", rt, rt),
                "cache hit (rerun)",
                unpickled_then(lambda v, rt=rt: FS.similarity_figure(v.matrix, "", rt, rt)),
            )
    if want("probes"):
        req = probes.Request(model_id=mid, set_name=name)
        h.measure(
            "probes (prompt, logistic, 5 folds)",
            lambda: probes.compute(s, req),
            lambda r: FPr.probe_figure(r.probe, r.baseline, ""),
            "layer change",
            unpickled_then(lambda r: FPr.confusion_figure(r.probe, r.probe.layers[1])),
        )
    if want("lens"):
        rid = runs["run_id"].iloc[0]

        def lens_page(r):
            return FL.lens_figure(r.lens, r.tokens, r.names)

        h.measure(
            "lens, one prompt",
            lambda: lens.compute_run(s, lm, rid, kind="logit", set_name=name),
            lens_page,
            "position change (cache hit)",
            unpickled_then(lambda r: (FL.lens_curves(r.lens, 1).to_json(), lens_page(r))[1]),
            note=f"{int(runs['n_tokens'].iloc[0])} positions",
        )
        req = lens.Request(model_id=mid, set_name=name, positions="last")
        h.measure(
            "lens, whole set (last positions)",
            lambda: lens.compute_set(s, lm, req),
            lambda r: FL.summary_figure(r.summary, name),
            "cache hit (rerun)",
            unpickled_then(lambda r: FL.summary_figure(r.summary, name)),
            note=f"{len(runs)} prompts",
        )
    if want("stats"):
        req = stats.Request(model_id=mid, set_name=name)
        h.measure(
            "stats",
            lambda: stats.compute(s, req),
            lambda r: FSt.stats_figure(r.stats, r.names),
            "cache hit (rerun)",
            unpickled_then(lambda r: FSt.stats_figure(r.stats, r.names)),
            note=f"first {min(len(runs), req.max_runs)} prompts",
        )
    clean, corrupted = patch_pair(h.words)
    if want("attention"):
        req = attention.Request(model=str(h.model_dir), prompt=clean)
        h.measure(
            "attention (one prompt)",
            lambda: attention.compute(None, req),
            lambda r: FA.heads_figure(r),
            "layer / head change",
            lambda r, b: FA.pattern_figure(r, r.layers[-1], 1),
            note="first includes loading the eager-attention instance",
        )
        attention._eager.cache_clear()
        gc.collect()
    if want("patching"):
        # random weights: both prompts may share their top-1, so name the two tokens
        req = patching.Request(
            model=str(h.model_dir),
            clean=clean,
            corrupted=corrupted,
            answer=h.words[1],
            against=h.words[2],
        )
        h.measure(
            "patching (one pair, every layer x position)",
            lambda: patching.compute(s, req, lm=lm),
            lambda r: FP.patching_figure(r),
            "stored result (reopen)",
            lambda r, b: FP.patching_figure(patching.cached(s, req)),
            note=f"{len(layers)} layers x {len(clean.split())} positions",
        )
    return h.rows


def extract(
    store, model_dir: Path, texts: pd.DataFrame, set_name: str, dtype: str = "auto"
) -> tuple[str, float, int]:
    """The real extract job into ``store``; -> (model_id, seconds, tokens)."""
    from backend.jobs.base import JobSpec
    from backend.jobs.worker import Worker

    store.save_prompt_set(set_name, texts)
    t0 = time.perf_counter()
    p = Worker(store).run(JobSpec(model=str(model_dir), set_name=set_name, dtype=dtype))
    dt = time.perf_counter() - t0
    if p.status != "done":
        raise RuntimeError(f"extract failed: {p.status} {p.message}")
    return p.result["model_id"], dt, int(p.result["tokens"])


def accept(
    name: str,
    work: Path,
    n_tokens: int,
    small: bool = False,
    repeat: int = 3,
    only: set[str] | None = None,
    log: Callable[[str], None] = print,
    keep_db: bool = False,
    profile: bool = False,
    dtype: str = "auto",
) -> dict:
    """Build, extract and render every view for one model; -> info dict with ``rows``.
    ``keep_db``: keep the store in ``work`` (a rerun finds the runs cached: no forward pass)."""
    from backend import models
    from backend.store import Store

    words = bpe_vocab(name, small)[2]
    t = time.perf_counter()
    model_dir = make_model(name, work / f"{name}{'-small' if small else ''}", small)
    build = time.perf_counter() - t
    db = work / f"{name}{'-small' if small else ''}.duckdb"
    if not keep_db:
        db.unlink(missing_ok=True)
    info = {"model": name, "build_s": build}
    with Store(db) as s:
        mid, cap, toks = extract(s, model_dir, prompt_set(n_tokens, words), "accept", dtype)
        info.update(capture_s=cap, tokens=toks, dtype=str(s.get_model(mid).get("dtype", "")))
        log(f"{name}: built in {build:.1f} s; extracted {toks:,} tokens in {cap:.1f} s")
        t = time.perf_counter()
        lm = models.get_model(str(model_dir), dtype)
        info["load_s"] = time.perf_counter() - t
        info["dtype"] = str(lm.dtype).removeprefix("torch.")
        h = Harness(s, model_dir, mid, "accept", words, repeat, log=log, profile=profile)
        try:
            info["rows"] = run_views(h, lm, only)
        finally:
            del lm
            models._get_model_cached.cache_clear()
            gc.collect()
    if not keep_db:
        db.unlink(missing_ok=True)
    return info


def gflops() -> float:
    """What this (shared) machine gives right now: float32 GFLOPS of a 1024^3 matmul (median
    of 5) — read the seconds above against it."""
    a = np.random.default_rng(0).normal(size=(1024, 1024)).astype(np.float32)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        a @ a
        ts.append(time.perf_counter() - t)
    return 2 * 1024**3 / statistics.median(ts) / 1e9


def table(infos: list[dict], target_first: dict[str, float]) -> str:
    out = [
        "| model | view | first render (compute) | cached interaction | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for info in infos:
        tf = target_first.get(info["model"], 2.0)
        for r in info["rows"]:
            f_ok = "" if r.first <= tf else " **miss**"
            c = "—"
            if r.cached is not None:
                c_ok = "" if r.cached <= 0.1 else " **miss**"
                c = f"{r.cached * 1000:,.0f} ms{c_ok} ({r.interaction})"
            out.append(
                f"| {info['model']} | {r.view} | {r.first:.2f} s{f_ok} ({r.compute:.2f}) | "
                f"{c} | {r.note} |"
            )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="gpt2,pythia,qwen,llama")
    ap.add_argument("--tokens", type=int, default=20_000)
    ap.add_argument(
        "--tokens-1b", type=int, default=None, help="tokens for llama (default: --tokens)"
    )
    ap.add_argument("--small", action="store_true", help="real configs scaled down")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--views", default=None, help="comma list: trajectories,similarity,...")
    ap.add_argument("--work", default=None, help="keeps the built models (default: a temp dir)")
    ap.add_argument(
        "--keep-db",
        action="store_true",
        help="keep each store in --work: reruns skip the extraction (capture time then reads ~0)",
    )
    ap.add_argument("--profile", action="store_true", help="cProfile each first render")
    ap.add_argument("--dtype", default="auto", help="extract and read out in this dtype")
    a = ap.parse_args()
    import torch

    work = Path(a.work or tempfile.mkdtemp(prefix="layerscope-accept-"))
    work.mkdir(parents=True, exist_ok=True)
    only = set(a.views.split(",")) if a.views else None
    print(
        f"# load average {os.getloadavg()}, torch threads {torch.get_num_threads()}, "
        f"matmul {gflops():.0f} GFLOPS"
    )
    infos = []
    for name in a.models.split(","):
        n = a.tokens_1b if name == "llama" and a.tokens_1b else a.tokens
        info = accept(
            name,
            work,
            n,
            a.small,
            a.repeat,
            only,
            keep_db=a.keep_db,
            profile=a.profile,
            dtype=a.dtype,
        )
        infos.append(info)
        print(
            f"{name}: dtype {info['dtype']}, capture {info['tokens']:,} tokens in "
            f"{info['capture_s']:.1f} s ({info['tokens'] / info['capture_s']:,.0f} tok/s), "
            f"model load {info['load_s']:.1f} s"
        )
        print(table([info], {"llama": 5.0}), flush=True)
    print(f"# load average {os.getloadavg()}, matmul {gflops():.0f} GFLOPS")
    print(table(infos, {"llama": 5.0}))


if __name__ == "__main__":
    main()
