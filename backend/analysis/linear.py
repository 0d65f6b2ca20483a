"""Batched linear classifiers for the probes: every fold, the shuffled control and the final
fit of one layer solved together, standardising each training set like ``StandardScaler``.

Internal to :mod:`backend.analysis.probes`; checked against scikit-learn through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LayerFit:
    test_scores: list[np.ndarray]  #: per fold, (n_test, n_classes) class scores summing to 1
    control_pred: list[np.ndarray]  #: per fold, (n_test,) predictions of the control probe
    weights: np.ndarray  #: (rows, d) raw-space weights of the probe fitted on all units
    bias: np.ndarray  #: (rows,)


def _stats(xc: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and scale (population std, zeros -> 1) of the masked rows: (S, d) each, float64."""
    m = masks.double()
    n = m.sum(1, keepdim=True)
    x64 = xc.double()
    mu = m @ x64 / n
    var = (m @ x64.square() / n - mu.square()).clamp_min(0)
    sd = var.sqrt()
    return mu, torch.where(sd < 1e-12 * (1 + mu.abs()), torch.ones_like(sd), sd)


def _masks(n: int, tests: list[np.ndarray]) -> torch.Tensor:
    """(folds + 1, n) training masks; the last row (all units) is the final fit."""
    m = torch.ones(len(tests) + 1, n, dtype=torch.bool)
    for f, te in enumerate(tests):
        m[f, torch.from_numpy(np.asarray(te))] = False
    return m


def _softmax_scores(z: torch.Tensor) -> np.ndarray:
    """Decision values (n, rows) -> class scores (n, n_classes); binary rows=1 -> [-z, z]."""
    if z.shape[1] == 1:
        z = torch.cat([-z, z], 1)
    return torch.softmax(z.double(), 1).float().numpy()


def ridge_layer(
    x: torch.Tensor,
    y: np.ndarray,
    y_ctrl: np.ndarray,
    tests: list[np.ndarray],
    nc: int,
    alpha: float = 10.0,
) -> LayerFit:
    """``StandardScaler + RidgeClassifier(alpha)`` per fold in closed form.

    x: (n, d) float32. The test folds partition the units, so the layer's Gram matrix is the
    sum of the test Grams and each training Gram is the full one minus its test Gram; true
    and shuffled targets share one batched Cholesky factorisation.
    """
    n, d = x.shape
    k = len(tests)
    m0 = x.double().mean(0)
    xc = (x - m0.float()).contiguous()
    masks = _masks(n, tests)
    mu, sd = _stats(xc, masks)
    mu, sd = mu.float(), sd.float()
    idx = [torch.from_numpy(np.asarray(te)) for te in tests]
    g_te = torch.stack([xc[i].T @ xc[i] for i in idx])  # (k, d, d)
    gram = torch.cat([g_te.sum(0, keepdim=True) - g_te, g_te.sum(0, keepdim=True)])
    n_tr = masks.sum(1).float()

    def targets(lab):
        t = -torch.ones(n, nc)
        t[torch.arange(n), torch.from_numpy(lab)] = 1.0
        return t[:, 1:] if nc == 2 else t

    t = torch.cat([targets(y), targets(y_ctrl)], 1)  # (n, 2 * rows)
    rows = t.shape[1] // 2
    mf = masks.float()  # (k + 1, n)
    t_mean = (mf @ t) / n_tr[:, None]  # (k + 1, 2 * rows)
    centred = mf[:, :, None] * (t[None] - t_mean[:, None])  # (k + 1, n, 2 * rows)
    rhs = (xc.T @ centred.permute(1, 0, 2).reshape(n, -1)).view(d, k + 1, -1).permute(1, 0, 2)
    rhs = rhs / sd[:, :, None]
    scatter = gram - n_tr[:, None, None] * mu[:, :, None] * mu[:, None, :]
    a = scatter / (sd[:, :, None] * sd[:, None, :]) + alpha * torch.eye(d)
    w = torch.cholesky_solve(rhs, torch.linalg.cholesky(a))  # (k + 1, d, 2 * rows)
    scores, ctrl = [], []
    for f, i in enumerate(idx):
        z = ((xc[i] - mu[f]) / sd[f]) @ w[f] + t_mean[f]
        scores.append(_softmax_scores(z[:, :rows]))
        zc = z[:, rows:]
        ctrl.append((zc[:, 0] > 0).long().numpy() if rows == 1 else zc.argmax(1).numpy())
    w_raw = (w[k, :, :rows] / sd[k][:, None]).T  # (rows, d)
    b = t_mean[k, :rows] - w_raw @ (mu[k] + m0.float())
    return LayerFit(scores, ctrl, w_raw.numpy(), b.numpy())


def logistic_layer(
    x: torch.Tensor,
    y: np.ndarray,
    y_ctrl: np.ndarray,
    tests: list[np.ndarray],
    nc: int,
    C: float = 0.1,
    max_iter: int = 100,
    tol: float = 1e-4,
) -> LayerFit:
    """``StandardScaler + LogisticRegression(C)`` per fold (binary log-loss, or multinomial),
    minimised jointly with L-BFGS: problems = folds x {true, shuffled} + the final fit.

    The objective of each problem is sklearn's: mean log-loss over its training rows +
    ||w||^2 / (2 C n_train), intercept unpenalised. x: (n, d) float32.
    """
    n, d = x.shape
    k = len(tests)
    rows = 1 if nc == 2 else nc
    m0 = x.double().mean(0)
    xc = (x.double() - m0).float()
    masks = _masks(n, tests)
    mu, sd = _stats(xc, masks)
    stat = list(range(k)) * 2 + [k]  # which training set each problem uses
    p_masks = masks[stat].float()  # (P, n)
    n_p = p_masks.sum(1)
    inv_sd = (1 / sd[stat]).float()  # (P, d)
    shift = (mu[stat] / sd[stat]).float()  # (P, d)
    lab = torch.from_numpy(np.stack([y] * k + [y_ctrl] * k + [y]))  # (P, n)
    weight = (p_masks / n_p[:, None]).T  # (n, P)
    P = len(stat)
    v = torch.zeros(P, d, rows, requires_grad=True)
    c = torch.zeros(P, rows, requires_grad=True)

    def decision(v, c):
        a = v * inv_sd[:, :, None]  # raw-space weights (P, d, rows)
        b = c - torch.einsum("pd,pdr->pr", shift, v)
        return (xc @ a.permute(1, 0, 2).reshape(d, P * rows)).view(n, P, rows) + b

    def objective():
        opt.zero_grad()
        z = decision(v, c)
        if rows == 1:
            nll = torch.nn.functional.binary_cross_entropy_with_logits(
                z[..., 0], lab.T.float(), reduction="none"
            )
        else:
            nll = -torch.log_softmax(z, -1).gather(-1, lab.T[..., None])[..., 0]
        loss = (nll * weight).sum() + (v.square().sum((1, 2)) / (2 * C * n_p)).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt = torch.optim.LBFGS(
            [v, c],
            lr=1,
            max_iter=max_iter,
            tolerance_grad=tol,
            tolerance_change=1e-10,
            history_size=10,
            line_search_fn="strong_wolfe",
        )
        opt.step(objective)
    with torch.no_grad():
        z = decision(v, c)
        scores, ctrl = [], []
        for f, te in enumerate(tests):
            te = torch.from_numpy(np.asarray(te))
            zf, zc = z[te, f], z[te, k + f]
            scores.append(_softmax_scores(zf / 2) if rows == 1 else torch.softmax(zf, 1).numpy())
            ctrl.append((zc[:, 0] > 0).long().numpy() if rows == 1 else zc.argmax(1).numpy())
        a = (v[-1] * inv_sd[-1][:, None]).T  # (rows, d)
        b = c[-1] - (shift[-1][:, None] * v[-1]).sum(0) - a @ m0.float()
    return LayerFit(scores, ctrl, a.numpy(), b.numpy())
