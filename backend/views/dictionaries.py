"""Sparse dictionaries (TopK SAEs) of one layer: trained on a set's cached token states, kept in
the store's derived cache, and moved in and out in SAELens's on-disk layout.

A trained dictionary's key is the model, the set (its runs), the layer and the settings; an
imported one's is the model and the layer. The payload is an npz without pickles: the four
weight arrays and one JSON document (settings, held-out metrics, the runs it was trained and
measured on). Training reads the layer's states without the model, prompt by prompt in chunks,
special tokens excluded; prompts are split train / held-out by the seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from backend.analysis import features as F
from backend.errors import LayerScopeError
from backend.store import Store
from backend.views import units

CACHE_KIND = "features"
TEST_SHARE = 0.25  #: prompts held out for the quality numbers
IN_MEMORY_BYTES = 256 << 20  #: a training set this small is read once; larger ones stream
CHUNK_TOKENS = 65_536  #: tokens per streamed read
_WEIGHTS = ("W_enc", "b_enc", "W_dec", "b_dec")


@dataclass(frozen=True)
class Dictionary:
    sae: F.SAE
    info: dict = field(default_factory=dict)  #: settings, metrics, train / held-out runs

    @property
    def layer(self) -> int:
        return int(self.info["layer"])

    def summary(self) -> dict:
        """The settings and quality numbers (not the run lists)."""
        return {k: v for k, v in self.info.items() if k not in ("train_runs", "heldout_runs")}


def hook_name(layer: int) -> str:
    """Our layer L (0 = embeddings, L = after block L-1) in TransformerLens / SAELens naming."""
    return "blocks.0.hook_resid_pre" if layer == 0 else f"blocks.{layer - 1}.hook_resid_post"


def layer_of_hook(name: str) -> int | None:
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", name or "")
    if m is None:
        return None
    return int(m[1]) + (1 if m[2] == "post" else 0)


def check_layer(store: Store, model_id: str, layer: int) -> dict:
    m = store.get_model(model_id)
    if m is None:
        raise LayerScopeError("This model has no runs in the store; extract a set first.")
    if not 0 <= layer <= m["n_layers"]:
        raise LayerScopeError(f"Layer {layer} is outside 0..{m['n_layers']} for this model.")
    return m


def key(store: Store, model_id: str, layer: int, set_name: str | None, settings: dict) -> str:
    if set_name is None:  # imported: one per model and layer
        return json.dumps(["v1", model_id, int(layer), "imported"])
    runs = units.set_runs_or_error(store, set_name, model_id)["run_id"].tolist()
    digest = hashlib.sha256("\n".join(runs).encode()).hexdigest()[:16]
    return json.dumps(["v1", model_id, int(layer), set_name, digest, settings], sort_keys=True)


def settings_of(latents: int, k: int, seed: int) -> dict:
    return {"latents": int(latents), "k": int(k), "seed": int(seed)}


def _dump(d: Dictionary) -> bytes:
    buf = io.BytesIO()
    info = json.dumps(d.info).encode()
    arrays = {n: getattr(d.sae, n) for n in _WEIGHTS}
    np.savez(buf, **arrays, _info=np.frombuffer(info, dtype=np.uint8))
    return buf.getvalue()


def _load(raw: bytes) -> Dictionary:
    z = np.load(io.BytesIO(raw), allow_pickle=False)  # a cache entry is input: no pickles
    info = json.loads(z["_info"].tobytes())
    sae = F.SAE(**{n: z[n] for n in _WEIGHTS}, k=int(info["k"]))
    return Dictionary(sae=sae, info=info)


def load(
    store: Store,
    model_id: str,
    layer: int,
    set_name: str | None,
    latents: int = 256,
    k: int = 8,
    seed: int = 0,
) -> Dictionary | None:
    """The stored dictionary (trained on ``set_name`` with these settings, or the imported one
    when ``set_name`` is None), or None; never trains."""
    raw = store.cache_get(
        CACHE_KIND, key(store, model_id, layer, set_name, settings_of(latents, k, seed))
    )
    if raw is None:
        return None
    try:
        return _load(raw)
    except (ValueError, KeyError, OSError, TypeError):  # damaged or old entry: as missing
        return None


def require(store: Store, model_id: str, layer: int, set_name: str | None, **settings):
    d = load(store, model_id, layer, set_name, **settings)
    if d is None:
        what = (
            f"trained on '{set_name}' at layer {layer} with these settings"
            if set_name
            else f"imported for layer {layer}"
        )
        raise LayerScopeError(
            f"No dictionary {what} yet: train one first (Features page button, or "
            "`python -m backend features train --set NAME --layer L`)."
        )
    return d


def feature_direction(
    store: Store, model_id: str, layer: int, set_name: str | None, feature: int
) -> np.ndarray:
    """The decoder row of ``feature`` (float64): from the dictionary trained on ``set_name``
    with the default settings, else the one imported for the layer."""
    d = load(store, model_id, layer, set_name) if set_name else None
    d = d or load(store, model_id, layer, None)
    if d is None:
        raise LayerScopeError(
            f"No dictionary at layer {layer} for a feature direction: train one on the set "
            f"(`features train --set NAME --layer {layer}`) or import one."
        )
    if feature >= d.sae.d_sae:
        raise LayerScopeError(
            f"Feature {feature} does not exist: the dictionary has {d.sae.d_sae}."
        )
    return d.sae.W_dec[feature].astype(np.float64)


def latent_ablation(store: Store, model_id: str, layer: int, set_name: str | None, feature: int):
    """x -> x − z_F(x) · W_dec[F] with the dictionary of ``feature_direction`` (the error term
    and the other latents kept): numpy (n, d) -> (n, d)."""
    from backend.capture.features import ablate_latent

    feature_direction(store, model_id, layer, set_name, feature)  # exists, or one message
    d = load(store, model_id, layer, set_name) if set_name else None
    return ablate_latent((d or load(store, model_id, layer, None)).sae, feature)


# -- training data ---------------------------------------------------------------------------
def token_units(store: Store, model_id: str, set_name: str) -> pd.DataFrame:
    """Every non-special token of the set (no sampling): run_id, pos, token, idx, label..."""
    runs = units.set_runs_or_error(store, set_name, model_id)
    return units.token_table(store, runs, skip_special=True, max_units=1 << 62)


def split_runs(run_ids: list[str], seed: int, test_share: float = TEST_SHARE):
    """Prompts split train / held-out by the seed (at least one each)."""
    if len(run_ids) < 2:
        raise LayerScopeError("A dictionary needs at least two prompts (some are held out).")
    order = np.random.default_rng(seed).permutation(len(run_ids))
    n_test = min(len(run_ids) - 1, max(1, math.ceil(test_share * len(run_ids))))
    held = sorted(run_ids[i] for i in order[:n_test])
    return sorted(run_ids[i] for i in order[n_test:]), held


def read_units(store: Store, meta: pd.DataFrame, layer: int) -> np.ndarray:
    """The layer's vectors of the unit table's tokens, read run-chunk by run-chunk."""
    return np.concatenate(list(_chunks(store, meta, layer)) or [np.empty((0, 0), np.float32)])


def _chunks(store: Store, meta: pd.DataFrame, layer: int, run_order=None):
    """Float32 chunks of about ``CHUNK_TOKENS`` tokens (whole runs, in ``run_order``)."""
    runs = pd.unique(meta["run_id"]) if run_order is None else run_order
    sizes = meta.groupby("run_id", sort=False).size().reindex(runs).to_numpy()
    a = 0
    while a < len(runs):
        b = a + int(np.searchsorted(np.cumsum(sizes[a:]), CHUNK_TOKENS)) + 1
        ids = list(runs[a:b])
        x, index = store.layer(ids, layer)
        keep = index.merge(meta[["run_id", "pos"]].assign(_k=1), on=["run_id", "pos"], how="left")
        yield x[keep["_k"].notna().to_numpy()]
        a = b


def _source(store: Store, meta: pd.DataFrame, layer: int, d_model: int) -> F.Source:
    if len(meta) * d_model * 4 <= IN_MEMORY_BYTES:
        return F.array_source(read_units(store, meta, layer), CHUNK_TOKENS)
    runs = pd.unique(meta["run_id"])

    def stream(rng: np.random.Generator):  # runs in a fresh order, rows shuffled per chunk
        for x in _chunks(store, meta, layer, runs[rng.permutation(len(runs))]):
            yield x[rng.permutation(len(x))]

    return stream


def train(
    store: Store,
    model_id: str,
    set_name: str,
    layer: int,
    latents: int = 256,
    k: int = 8,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Dictionary | None:
    """Train on the set's training prompts, measure on the held-out ones, store; None when
    cancelled (nothing stored)."""
    m = check_layer(store, model_id, layer)
    if not 1 <= k <= latents:
        raise LayerScopeError(f"k must lie in 1..{latents} (the number of latents); got {k}.")
    if latents > 1 << 17:
        raise LayerScopeError(f"{latents:,} latents is too many here (at most 131,072).")
    meta = token_units(store, model_id, set_name)
    train_runs, held_runs = split_runs(pd.unique(meta["run_id"]).tolist(), seed)
    tr_meta = meta[meta["run_id"].isin(set(train_runs))]
    held_meta = meta[meta["run_id"].isin(set(held_runs))]
    d = int(m["d_model"])
    try:
        tr = F.train(
            _source(store, tr_meta, layer, d),
            len(tr_meta),
            latents,
            k,
            seed,
            progress=progress,
            should_stop=should_stop,
        )
    except ValueError as e:
        raise LayerScopeError(str(e)) from None
    if tr.cancelled:
        return None
    q = F.evaluate(tr.sae, _chunks(store, held_meta, layer))
    settings = settings_of(latents, k, seed)
    info = {
        "source": "trained",
        "model_id": model_id,
        "set": set_name,
        "layer": int(layer),
        "hook_name": hook_name(layer),
        "d_in": d,
        **settings,
        "fvu": q.fvu,
        "l0": q.l0,
        "dead_fraction": q.dead_fraction,
        "n_train_tokens": len(tr_meta),
        "n_heldout_tokens": q.n_tokens,
        "steps": tr.steps,
        "tokens_seen": tr.tokens_seen,
        "seconds": round(tr.seconds, 3),
        "final_train_fvu": float(tr.loss[-20:].mean()) if len(tr.loss) else None,
        "train_runs": train_runs,
        "heldout_runs": held_runs,
    }
    out = Dictionary(sae=tr.sae, info=info)
    store.cache_put(CACHE_KIND, key(store, model_id, layer, set_name, settings), _dump(out))
    return out


# -- spliced loss (with the model) ----------------------------------------------------------
def splice(store: Store, d: Dictionary, lm, set_name: str, max_prompts: int = 256) -> dict:
    """The next-token loss on the held-out prompts (at most ``max_prompts``) with the
    reconstruction spliced in at the layer vs clean vs the layer's mean (over the training
    tokens), and loss recovered; kept in the dictionary's entry (``info["splice"]``)."""
    from backend.capture import features as CF

    model_id = d.info["model_id"]
    if lm.info.d_model != d.sae.d_in:
        raise LayerScopeError(f"The dictionary reads {d.sae.d_in} dims; the model has "
                              f"{lm.info.d_model}.")  # fmt: skip
    meta = token_units(store, model_id, set_name)
    train_runs, held = d.info.get("train_runs"), d.info.get("heldout_runs")
    if not held or d.info.get("set") != set_name:
        train_runs, held = split_runs(pd.unique(meta["run_id"]).tolist(), 0)
    tr_meta = meta[meta["run_id"].isin(set(train_runs))]
    s1, n = np.zeros(d.sae.d_in), 0
    for x in _chunks(store, tr_meta, d.layer):
        s1 += x.sum(0, dtype=np.float64)
        n += len(x)
    prompts = []
    for r in held[:max_prompts]:
        t = store.tokens(r)
        prompts.append((t["token_id"].astype(int).tolist(), t["is_special"].astype(bool).tolist()))
    out = {
        **CF.spliced_loss(lm, prompts, d.layer, d.sae, s1 / max(n, 1)).to_dict(),
        "set": set_name,
    }
    info = {**d.info, "splice": out}
    if d.info.get("source") == "imported":
        k = key(store, model_id, d.layer, None, {})
    else:
        k = key(store, model_id, d.layer, d.info["set"], settings_of(d.sae.d_sae, d.sae.k,
                                                                     d.info["seed"]))  # fmt: skip
    store.cache_put(CACHE_KIND, k, _dump(Dictionary(sae=d.sae, info=info)))
    return out


# -- SAELens layout --------------------------------------------------------------------------
def export_saelens(d: Dictionary, out: str | Path) -> Path:
    """cfg.json + sae_weights.safetensors (float32) in SAELens's layout."""
    from safetensors.numpy import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {
        "architecture": "topk",
        "d_in": d.sae.d_in,
        "d_sae": d.sae.d_sae,
        "k": d.sae.k,
        "activation_fn_kwargs": {"k": d.sae.k},
        "hook_name": hook_name(d.layer),
        "hook_layer": max(d.layer - 1, 0),
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "dtype": "float32",
        "model_name": d.info.get("model_id"),
        "dataset_path": d.info.get("set"),
        "layerscope": {**d.summary(), "heldout_runs": d.info.get("heldout_runs")},
    }
    (out / "cfg.json").write_text(json.dumps(cfg, indent=2))
    save_file(
        {n: np.ascontiguousarray(getattr(d.sae, n), np.float32) for n in _WEIGHTS},
        str(out / "sae_weights.safetensors"),
    )
    return out


def _bad(src: Path, why: str) -> LayerScopeError:
    return LayerScopeError(f"{src} is not a usable SAELens TopK dictionary: {why}.")


def read_saelens(src: str | Path) -> tuple[F.SAE, dict]:
    """The SAE and cfg of an SAELens-layout folder; one clear message when malformed."""
    src = Path(src)
    try:
        cfg = json.loads((src / "cfg.json").read_text())
    except FileNotFoundError:
        raise _bad(src, "no cfg.json") from None
    except (OSError, ValueError):
        raise _bad(src, "cfg.json is not valid JSON") from None
    if not isinstance(cfg, dict):
        raise _bad(src, "cfg.json is not a JSON object")
    arch = cfg.get("architecture", "standard")
    k = cfg.get("k", (cfg.get("activation_fn_kwargs") or {}).get("k"))
    if arch != "topk" or not isinstance(k, int) or k < 1:
        raise _bad(src, f"architecture {arch!r} with k={k!r} (only TopK dictionaries with k >= 1)")
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        w = load_file(str(src / "sae_weights.safetensors"))
    except FileNotFoundError:
        raise _bad(src, "no sae_weights.safetensors") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise _bad(
            src, f"sae_weights.safetensors cannot be read ({str(e).splitlines()[0]})"
        ) from None
    missing = [n for n in _WEIGHTS if n not in w]
    if missing:
        raise _bad(src, f"missing {', '.join(missing)}")
    d_in, d_sae = np.shape(w["W_enc"]) if np.ndim(w["W_enc"]) == 2 else (None, None)
    want = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
    for n, shape in want.items():
        if d_in is None or tuple(w[n].shape) != shape:
            raise _bad(src, f"{n} has shape {list(w[n].shape)}, expected {list(shape)}")
    if k > d_sae:
        raise _bad(src, f"k={k} exceeds the {d_sae} latents")
    arrays = {n: np.asarray(w[n], dtype=np.float32) for n in _WEIGHTS}
    return F.SAE(**arrays, k=k), cfg


def import_saelens(store: Store, model_id: str, layer: int, src: str | Path) -> Dictionary:
    m = check_layer(store, model_id, layer)
    sae, cfg = read_saelens(src)
    if sae.d_in != m["d_model"]:
        raise _bad(Path(src), f"d_in {sae.d_in} differs from the model's d_model {m['d_model']}")
    hooked = layer_of_hook(cfg.get("hook_name"))
    if hooked is not None and hooked != layer:
        raise LayerScopeError(
            f"{src} was trained at {cfg['hook_name']} (our layer {hooked}), not layer {layer}."
        )
    info = {
        "source": "imported",
        "from": str(src),
        "model_id": model_id,
        "layer": int(layer),
        "hook_name": hook_name(layer),
        "d_in": sae.d_in,
        **settings_of(sae.d_sae, sae.k, 0),
    }
    d = Dictionary(sae=sae, info=info)
    store.cache_put(CACHE_KIND, key(store, model_id, layer, None, {}), _dump(d))
    return d


# -- the job ---------------------------------------------------------------------------------
class _Cancelled(Exception):
    pass


def run_job(ctx) -> dict:
    """Job kind ``features``: train one dictionary; progress in percent (tokens_done of 100).
    Options: model_id, layer, latents, k, seed."""
    o = dict(ctx.spec.options)
    p = ctx.progress
    p.tokens_total, p.message = 100, "reading states"
    ctx.report(force=True)

    def on_progress(fraction: float) -> None:
        p.tokens_done, p.message = round(100 * fraction), "training"
        ctx.report()

    d = train(
        ctx.store,
        o["model_id"],
        ctx.spec.set_name,
        int(o["layer"]),
        int(o.get("latents", 256)),
        int(o.get("k", 8)),
        int(o.get("seed", 0)),
        progress=on_progress,
        should_stop=ctx.should_stop,
    )
    if d is None:
        return {"cancelled": True}
    p.tokens_done = 100
    return d.summary()
