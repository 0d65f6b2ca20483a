"""TopK sparse autoencoders (Gao et al. 2024, "Scaling and evaluating sparse autoencoders").

    z = ReLU(TopK(W_enc^T (x - b_dec) + b_enc)),   x̂ = W_dec^T z + b_dec

with W_enc (d_in, d_sae), W_dec (d_sae, d_in) whose rows have unit norm (renormalised after
every step, the gradient component parallel to each row removed first), b_dec initialised to
the geometric median of the first chunk, and the AuxK loss (coefficient 1/32) that lets
latents dead for ``dead_tokens`` tokens reconstruct the residual error. Training reads its data
as a stream of chunks (``source(rng)`` yields float32 arrays), so memory is bounded by a chunk.

Encoding, decoding and the quality numbers are plain numpy (no torch on read):
FVU = Σ‖x − x̂‖² / Σ‖x − x̄‖² over held-out tokens, mean L0, and the dead fraction (latents
never active on them).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

AUX_COEF = 1 / 32
MIN_STEPS = 400  #: default training length on small sets (the demo: 2,000 tokens)
MAX_STEPS = 3000  #: ... and its cap on large ones (a CPU: ~1 s a step at GPT-2 size)
SMALL_WORK = 1 << 20  #: d_sae x batch below which training runs on one thread
ENCODE_CHUNK = 8192  #: tokens per numpy encode step (bounds the (n, d_sae) pre-activations)

Source = Callable[[np.random.Generator], Iterable[np.ndarray]]


@dataclass(frozen=True)
class SAE:
    """A TopK sparse autoencoder's weights (float32 numpy)."""

    W_enc: np.ndarray  #: (d_in, d_sae)
    b_enc: np.ndarray  #: (d_sae,)
    W_dec: np.ndarray  #: (d_sae, d_in), unit-norm rows
    b_dec: np.ndarray  #: (d_in,)
    k: int

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def encode_topk(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sparse codes of x (n, d_in): latent ids (n, k) int64 and activations (n, k) float32
        (ReLU applied: a selected latent may be 0)."""
        x = np.asarray(x, dtype=np.float32)
        n = len(x)
        idx = np.empty((n, self.k), dtype=np.int64)
        val = np.empty((n, self.k), dtype=np.float32)
        for a in range(0, n, ENCODE_CHUNK):
            pre = (x[a : a + ENCODE_CHUNK] - self.b_dec) @ self.W_enc + self.b_enc
            i = np.argpartition(pre, -self.k, axis=1)[:, -self.k :]
            idx[a : a + len(pre)] = i
            val[a : a + len(pre)] = np.maximum(np.take_along_axis(pre, i, axis=1), 0.0)
        return idx, val

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Dense codes (n, d_sae) float32."""
        idx, val = self.encode_topk(x)
        z = np.zeros((len(idx), self.d_sae), dtype=np.float32)
        np.put_along_axis(z, idx, val, axis=1)
        return z

    def decode_topk(self, idx: np.ndarray, val: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.d_in), dtype=np.float32)
        step = max(1, (64 << 20) // (4 * self.k * self.d_in))
        for a in range(0, len(idx), step):
            rows = self.W_dec[idx[a : a + step]]  # (m, k, d_in)
            out[a : a + step] = np.einsum("mk,mkd->md", val[a : a + step], rows) + self.b_dec
        return out

    def decode(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float32) @ self.W_dec + self.b_dec


@dataclass(frozen=True)
class Metrics:
    """Quality of a dictionary on a set of tokens (held-out ones, for honest numbers)."""

    fvu: float  #: Σ‖x − x̂‖² / Σ‖x − x̄‖²
    l0: float  #: mean number of active (> 0) latents per token
    dead_fraction: float  #: latents never active on these tokens
    density: np.ndarray  #: (d_sae,) share of tokens on which each latent is active
    max_act: np.ndarray  #: (d_sae,) largest activation of each latent
    n_tokens: int


def evaluate(sae: SAE, chunks: Iterable[np.ndarray]) -> Metrics:
    """FVU, L0, dead fraction, density and max activation over a stream of chunks."""
    err = 0.0
    s1 = np.zeros(sae.d_in, dtype=np.float64)
    s2 = 0.0
    n = 0
    active = np.zeros(sae.d_sae, dtype=np.int64)
    mx = np.zeros(sae.d_sae, dtype=np.float32)
    for x in chunks:
        x = np.asarray(x, dtype=np.float32)
        if not len(x):
            continue
        idx, val = sae.encode_topk(x)
        err += float(((x - sae.decode_topk(idx, val)).astype(np.float64) ** 2).sum())
        s1 += x.sum(0, dtype=np.float64)
        s2 += float((x.astype(np.float64) ** 2).sum())
        n += len(x)
        on = val > 0
        active += np.bincount(idx[on], minlength=sae.d_sae)
        np.maximum.at(mx, idx[on], val[on])
    if n == 0:
        raise ValueError("no tokens to evaluate the dictionary on")
    total = s2 - float(s1 @ s1) / n
    return Metrics(
        fvu=err / total if total > 0 else float("nan"),
        l0=float(active.sum()) / n,
        dead_fraction=float((active == 0).mean()),
        density=(active / n).astype(np.float32),
        max_act=mx,
        n_tokens=n,
    )


def geometric_median(x: np.ndarray, iters: int = 50, eps: float = 1e-6) -> np.ndarray:
    """Weiszfeld's algorithm, started at the mean."""
    x = np.asarray(x, dtype=np.float64)
    m = x.mean(0)
    for _ in range(iters):
        w = 1.0 / np.maximum(np.linalg.norm(x - m, axis=1), eps)
        nxt = (w[:, None] * x).sum(0) / w.sum()
        if np.linalg.norm(nxt - m) < eps * (1 + np.linalg.norm(m)):
            return nxt
        m = nxt
    return m


@dataclass(frozen=True)
class Training:
    sae: SAE
    steps: int
    tokens_seen: int
    seconds: float
    loss: np.ndarray  #: (steps,) normalised reconstruction loss per step (batch FVU)
    cancelled: bool = False


def array_source(x: np.ndarray, chunk: int = 65536) -> Source:
    """A source over an in-memory array: shuffled rows, in chunks."""

    def source(rng: np.random.Generator) -> Iterator[np.ndarray]:
        order = rng.permutation(len(x))
        for a in range(0, len(x), chunk):
            yield np.asarray(x[np.sort(order[a : a + chunk])], dtype=np.float32)

    return source


def train(
    source: Source,
    n_tokens: int,
    d_sae: int,
    k: int,
    seed: int = 0,
    *,
    tokens: int | None = None,
    batch: int = 1024,
    lr: float | None = None,
    dead_tokens: int | None = None,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Training:
    """Train a TopK SAE over ``tokens`` tokens (default: 30 epochs, within ``MIN_STEPS`` to
    ``MAX_STEPS`` steps) read from ``source`` (``n_tokens`` per epoch). ``lr`` defaults to 2e-4 · sqrt(2^14 / d_sae)
    (Gao et al.'s scaling). Seeded: the same data and seed give the same weights."""
    import torch

    if not 1 <= k <= d_sae:
        raise ValueError(f"k must lie in 1..{d_sae} (the number of latents); got {k}")
    threads = torch.get_num_threads()
    try:
        # small matrices: thread start-up costs more than it gains (10x on a shared CPU)
        if d_sae * batch < SMALL_WORK:
            torch.set_num_threads(1)
        return _train(
            source, n_tokens, d_sae, k, seed, tokens, batch, lr, dead_tokens, progress, should_stop
        )
    finally:
        torch.set_num_threads(threads)


def _train(
    source, n_tokens, d_sae, k, seed, tokens, batch, lr, dead_tokens, progress, should_stop
) -> Training:
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    tokens = tokens or min(max(30 * n_tokens, MIN_STEPS * batch), MAX_STEPS * batch)
    lr = lr or 2e-4 * math.sqrt(2**14 / d_sae)
    dead_tokens = dead_tokens or max(batch, min(10_000_000, n_tokens))
    t0 = time.perf_counter()

    first = next(iter(source(np.random.default_rng(seed))))
    d_in = first.shape[1]
    med = geometric_median(first[:20_000])
    # train on x / scale (mean squared norm d_in about the median); folded back at the end
    scale = float(np.sqrt(((first - med) ** 2).sum(1).mean() / d_in)) or 1.0
    W_dec = torch.randn(d_sae, d_in, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    W_dec = W_dec.requires_grad_()
    W_enc = W_dec.detach().T.clone().requires_grad_()
    b_enc = torch.zeros(d_sae, requires_grad=True)
    b_dec = torch.tensor(med / scale, dtype=torch.float32, requires_grad=True)
    params = [W_enc, b_enc, W_dec, b_dec]
    # Adam by hand: torch.optim's first step imports the compiler stack (seconds on a CPU)
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    n_steps = max(1, tokens // batch)
    decay_from = int(0.8 * n_steps)  # linear decay of the rate over the last fifth
    since = torch.zeros(d_sae, dtype=torch.long)
    losses, step, cancelled = [], 0, False
    while step < n_steps and not cancelled:
        for chunk in source(rng):
            xs = torch.from_numpy(np.asarray(chunk, dtype=np.float32) / scale)
            for a in range(0, max(1, len(xs) - batch // 2 + 1), batch):
                if step >= n_steps or (should_stop and should_stop()):
                    cancelled = step < n_steps
                    break
                x = xs[a : a + batch]
                rate = lr * min(1.0, (n_steps - step) / max(1, n_steps - decay_from))
                loss, fired = _loss(x, W_enc, b_enc, W_dec, b_dec, k, since >= dead_tokens, d_in)
                for p in params:
                    p.grad = None
                loss[0].backward()
                with torch.no_grad():  # keep decoder rows on the unit sphere
                    W_dec.grad -= (W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec
                    _adam(params, m1, m2, step + 1, rate)
                    W_dec /= W_dec.norm(dim=1, keepdim=True)
                since += len(x)
                since[fired] = 0
                losses.append(float(loss[1]))
                step += 1
                if progress and step % 10 == 0:
                    progress(step / n_steps)
            if step >= n_steps or cancelled:
                break
    sae = SAE(
        W_enc=W_enc.detach().numpy().copy(),
        b_enc=(b_enc.detach().numpy() * scale).astype(np.float32),
        W_dec=W_dec.detach().numpy().copy(),
        b_dec=(b_dec.detach().numpy() * scale).astype(np.float32),
        k=k,
    )
    return Training(
        sae=sae,
        steps=step,
        tokens_seen=step * batch,
        seconds=time.perf_counter() - t0,
        loss=np.asarray(losses, dtype=np.float32),
        cancelled=cancelled,
    )


def _adam(params, m1, m2, t: int, lr: float, b1=0.9, b2=0.999, eps=6.25e-10) -> None:
    for p, a, b in zip(params, m1, m2):
        a.mul_(b1).add_(p.grad, alpha=1 - b1)
        b.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
        denom = (b / (1 - b2**t)).sqrt_().add_(eps)
        p.addcdiv_(a, denom, value=-lr / (1 - b1**t))


def _loss(x, W_enc, b_enc, W_dec, b_dec, k, dead, d_in):
    """(loss with AuxK, batch FVU, ids of latents that fired). Dense matmuls: on a CPU they beat
    gathering the k selected columns, whose scatter-add backward is 2x slower at GPT-2 size."""
    import torch

    pre = (x - b_dec) @ W_enc + b_enc
    v, idx = pre.topk(k, dim=1)
    z = torch.zeros_like(pre).scatter(1, idx, torch.relu(v))
    x_hat = z @ W_dec + b_dec
    var = ((x - x.mean(0)) ** 2).sum().clamp_min(1e-12)
    fvu = ((x_hat - x) ** 2).sum() / var
    loss = fvu
    n_dead = int(dead.sum())
    if n_dead:  # AuxK: the top dead latents model the residual error
        dead_ids = dead.nonzero().squeeze(1)
        e = (x - x_hat).detach()
        va, ia = pre[:, dead_ids].topk(min(d_in // 2, n_dead), dim=1)
        z_aux = torch.zeros(len(x), n_dead).scatter(1, ia, torch.relu(va))
        e_hat = z_aux @ W_dec[dead_ids]
        aux = ((e_hat - e) ** 2).sum() / ((e - e.mean(0)) ** 2).sum().clamp_min(1e-12)
        loss = loss + AUX_COEF * torch.nan_to_num(aux)
    fired = idx[v.detach() > 0].unique()
    return (loss, fvu.detach()), fired


@dataclass(frozen=True)
class SparseProbe:
    """A probe on ``latents`` only (chosen on the selection prompts), cross-validated on the
    evaluation prompts with ``probes.run_probes`` (same folds, interval and controls)."""

    latents: tuple[int, ...]  #: the k latents with the largest |AUROC - 0.5| (best label)
    selection_auroc: tuple[float, ...]
    result: object  #: probes.ProbeResult (one "layer": the latents)
    n_selection: int
    n_eval: int

    def to_dict(self) -> dict:
        r = self.result
        return {
            "latents": list(self.latents),
            "selection_auroc": [round(a, 4) for a in self.selection_auroc],
            "method": r.method,
            "accuracy": round(float(r.accuracy[0]), 4),
            "interval": [round(float(r.ci_low[0]), 4), round(float(r.ci_high[0]), 4)],
            "interval_method": r.interval_method,
            "control": round(float(r.control[0]), 4),
            "selectivity": round(float(r.selectivity[0]), 4),
            "majority": round(r.majority, 4),
            "folds": r.folds,
            "n_selection_prompts": self.n_selection,
            "n_eval_prompts": self.n_eval,
        }


def select_latents(z: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` columns of ``z`` whose AUROC (one label vs the rest, the best label) lies
    farthest from 0.5, ties by id; and those AUROCs."""
    from scipy.stats import rankdata

    best = np.full(z.shape[1], 0.5)
    r = rankdata(z, axis=0)
    for c in np.unique(labels):
        pos = labels == c
        n1, n0 = int(pos.sum()), int((~pos).sum())
        au = (r[pos].sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)
        gap, was = np.abs(au - 0.5), np.abs(best - 0.5)
        best = np.where((gap > was) | ((gap == was) & (au > best)), au, best)  # ties: > 0.5
    order = np.lexsort((np.arange(z.shape[1]), -np.abs(best - 0.5)))[:k]
    return order, best[order]


def sparse_probe(z_sel, y_sel, z_eval, y_eval, groups, k: int = 8, method="logistic", seed=0):
    """Select ``k`` latents on (z_sel, y_sel), probe them on (z_eval, y_eval) by grouped
    cross-validation (``groups``: the prompt of each unit)."""
    from backend.analysis.probes import run_probes

    cols, au = select_latents(np.asarray(z_sel), np.asarray(y_sel).astype(str), k)
    folds = int(min(5, np.bincount(np.unique(y_eval, return_inverse=True)[1]).min()))
    if folds < 2:
        raise ValueError("too few evaluation prompts of some label for cross-validation")
    res = run_probes(np.asarray(z_eval)[None][:, :, cols], y_eval, groups, [0], folds, method, seed)
    return SparseProbe(tuple(int(c) for c in cols), tuple(float(a) for a in au), res,
                       len(y_sel), len(y_eval))  # fmt: skip
