"""Batched linear classifiers for the probes: every fold, the shuffled control and the final
fit of one layer solved together, standardising each training set like ``StandardScaler``.

numpy + scipy only (no torch: reading the cache and probing it never imports torch). Internal
to :mod:`backend.analysis.probes`; checked against scikit-learn through it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backend.analysis._threads import one_blas_thread


@dataclass(frozen=True)
class LayerFit:
    test_scores: list[np.ndarray]  #: per fold, (n_test, n_classes) class scores summing to 1
    control_pred: list[np.ndarray]  #: per fold, (n_test,) predictions of the control probe
    weights: np.ndarray  #: (rows, d) raw-space weights of the probe fitted on all units
    bias: np.ndarray  #: (rows,)
    converged: bool = True  #: the solver met its tolerance (ridge: closed form, always)
    n_iter: int = 0  #: solver iterations (0: closed form)
    start: np.ndarray | None = None  #: the solution, to warm-start a similar problem


def _stats(xc: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (population std, zeros -> 1) of the masked rows: (S, d) each, float64."""
    m = masks.astype(np.float64)
    n = m.sum(1, keepdims=True)
    x64 = xc.astype(np.float64)
    mu = m @ x64 / n
    var = np.clip(m @ np.square(x64) / n - np.square(mu), 0, None)
    sd = np.sqrt(var)
    return mu, np.where(sd < 1e-12 * (1 + np.abs(mu)), 1.0, sd)


def _masks(n: int, tests: list[np.ndarray]) -> np.ndarray:
    """(folds + 1, n) training masks; the last row (all units) is the final fit."""
    m = np.ones((len(tests) + 1, n), dtype=bool)
    for f, te in enumerate(tests):
        m[f, np.asarray(te)] = False
    return m


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _softmax_scores(z: np.ndarray) -> np.ndarray:
    """Decision values (n, rows) -> class scores (n, n_classes); binary rows=1 -> [-z, z]."""
    if z.shape[1] == 1:
        z = np.concatenate([-z, z], 1)
    return _softmax(z.astype(np.float64)).astype(np.float32)


def ridge_layer(
    x: np.ndarray,
    y: np.ndarray,
    y_ctrl: np.ndarray,
    tests: list[np.ndarray],
    nc: int,
    alpha: float = 10.0,
) -> LayerFit:
    """``StandardScaler + RidgeClassifier(alpha)`` per fold in closed form.

    x: (n, d) float32. The test folds partition the units, so the layer's Gram matrix is the
    sum of the test Grams and each training Gram is the full one minus its test Gram; true
    and shuffled targets share one batched solve (float64).
    """
    n, d = x.shape
    k = len(tests)
    m0 = x.mean(0, dtype=np.float64)
    xc = x - m0  # float64
    masks = _masks(n, tests)
    mu, sd = _stats(xc, masks)
    idx = [np.asarray(te) for te in tests]
    xs = xc[np.concatenate(idx)]  # the rows grouped by fold: each fold's Gram from a slice
    ends = np.cumsum([0, *map(len, idx)])
    g_te = np.empty((k, d, d))
    for f in range(k):
        part = xs[ends[f] : ends[f + 1]]
        np.matmul(part.T, part, out=g_te[f])
    gram = np.concatenate([g_te.sum(0, keepdims=True) - g_te, g_te.sum(0, keepdims=True)])
    n_tr = masks.sum(1).astype(np.float64)

    def targets(lab):
        t = -np.ones((n, nc))
        t[np.arange(n), lab] = 1.0
        return t[:, 1:] if nc == 2 else t

    t = np.concatenate([targets(y), targets(y_ctrl)], 1)  # (n, 2 * rows)
    rows = t.shape[1] // 2
    mf = masks.astype(np.float64)  # (k + 1, n)
    t_mean = (mf @ t) / n_tr[:, None]  # (k + 1, 2 * rows)
    centred = mf[:, :, None] * (t[None] - t_mean[:, None])  # (k + 1, n, 2 * rows)
    kk, _, r2 = centred.shape  # X^T (masked, centred targets) for every fit: one GEMM
    rhs = (xc.T @ centred.transpose(1, 0, 2).reshape(n, kk * r2)).reshape(d, kk, r2)
    rhs = rhs.transpose(1, 0, 2) / sd[:, :, None]
    scatter = gram - n_tr[:, None, None] * mu[:, :, None] * mu[:, None, :]
    a = scatter / (sd[:, :, None] * sd[:, None, :]) + alpha * np.eye(d)
    with one_blas_thread():  # LAPACK on 2 threads of a shared machine: several times slower
        w = np.linalg.solve(a, rhs)  # (k + 1, d, 2 * rows); a is symmetric positive definite
    scores, ctrl = [], []
    for f, i in enumerate(idx):
        z = ((xc[i] - mu[f]) / sd[f]) @ w[f] + t_mean[f]
        scores.append(_softmax_scores(z[:, :rows]))
        zc = z[:, rows:]
        ctrl.append((zc[:, 0] > 0).astype(np.int64) if rows == 1 else zc.argmax(1))
    w_raw = (w[k, :, :rows] / sd[k][:, None]).T  # (rows, d)
    b = t_mean[k, :rows] - w_raw @ (mu[k] + m0)
    return LayerFit(scores, ctrl, w_raw.astype(np.float32), b.astype(np.float32))


def logistic_layer(
    x: np.ndarray,
    y: np.ndarray,
    y_ctrl: np.ndarray,
    tests: list[np.ndarray],
    nc: int,
    C: float = 0.1,
    max_iter: int = 3000,
    tol: float = 1e-4,
    start: np.ndarray | None = None,
) -> LayerFit:
    """``StandardScaler + LogisticRegression(C)`` per fold (binary log-loss, or multinomial),
    minimised jointly with scipy's L-BFGS: problems = folds x {true, shuffled} + the final fit.

    The objective of each problem is sklearn's: mean log-loss over its training rows +
    ||w||^2 / (2 C n_train), intercept unpenalised. The problems are independent, so one
    joint minimisation of their sum solves each. x: (n, d) float32; computed in float64.

    Iterates until every gradient component is below ``tol`` (each problem's own gradient,
    as the problems do not share variables), or ``max_iter``; ``converged`` says which.
    ``start``: a previous fit's ``start`` of the same shape (e.g. the layer below, in
    standardised coordinates) to begin from instead of zero.
    """
    from scipy.optimize import minimize
    from scipy.special import log_softmax

    n, d = x.shape
    k = len(tests)
    rows = 1 if nc == 2 else nc
    m0 = x.astype(np.float64).mean(0)
    xc = x.astype(np.float64) - m0
    masks = _masks(n, tests)
    mu, sd = _stats(xc, masks)
    # the two products with the data per iteration run in float32 (memory-bound: the float64
    # copy is twice the bytes); the objective, gradient and L-BFGS stay float64
    x32 = xc.astype(np.float32)
    stat = list(range(k)) * 2 + [k]  # which training set each problem uses
    p_masks = masks[stat].astype(np.float64)  # (P, n)
    n_p = p_masks.sum(1)
    inv_sd = 1 / sd[stat]  # (P, d)
    shift = mu[stat] / sd[stat]  # (P, d)
    lab = np.stack([y] * k + [y_ctrl] * k + [y]).T  # (n, P)
    weight = (p_masks / n_p[:, None]).T  # (n, P)
    P = len(stat)
    n_v = P * d * rows
    if rows == 1:
        target = lab.astype(np.float64)[:, :, None]  # (n, P, 1)
    else:
        target = np.zeros((n, P, rows))
        np.put_along_axis(target, lab[:, :, None], 1.0, axis=-1)

    def unpack(theta):
        return theta[:n_v].reshape(P, d, rows), theta[n_v:].reshape(P, rows)

    def decision(v, c):
        a = v * inv_sd[:, :, None]  # raw-space weights (P, d, rows)
        b = c - np.einsum("pd,pdr->pr", shift, v)
        a32 = a.transpose(1, 0, 2).reshape(d, P * rows).astype(np.float32)
        return (x32 @ a32).astype(np.float64).reshape(n, P, rows) + b

    def objective(theta):
        v, c = unpack(theta)
        z = decision(v, c)
        if rows == 1:
            nll = np.logaddexp(0, z[..., 0]) - target[..., 0] * z[..., 0]
            g = 1 / (1 + np.exp(-z)) - target
        else:
            logp = log_softmax(z, -1)
            nll = -(logp * target).sum(-1)
            g = np.exp(logp) - target
        penalty = np.square(v).sum((1, 2)) / (2 * C * n_p)
        loss = (nll * weight).sum() + penalty.sum()
        g = g * weight[:, :, None]  # dloss/dz (n, P, rows)
        g_a = (x32.T @ g.reshape(n, P * rows).astype(np.float32)).astype(np.float64)
        g_a = g_a.reshape(d, P, rows).transpose(1, 0, 2)
        g_b = g.sum(0)  # (P, rows)
        g_v = g_a * inv_sd[:, :, None] - shift[:, :, None] * g_b[:, None, :]
        g_v += v / (C * n_p)[:, None, None]
        return loss, np.concatenate([g_v.ravel(), g_b.ravel()])

    # preconditioning: L-BFGS runs on u with v = M u, M = (R + eps I)^(-1/2) for R the
    # standardised features' correlation (all units): the loss's curvature is about
    # p(1 - p) R + penalty, so in u it is near-isotropic (the residual stream is strongly
    # correlated: from zero, unpreconditioned, demo depth needed ~840 steps). Same minimum.
    s_all = (xc - mu[k]) / sd[k]
    evals, evecs = np.linalg.eigh(s_all.T @ s_all / n)
    eps = max(4 / (C * n_p.mean()), 1e-6 * max(evals.max(), 1e-12))
    root = np.sqrt(np.clip(evals, 0, None) + eps)
    m_pre, m_inv = (evecs / root) @ evecs.T, (evecs * root) @ evecs.T

    def to_v(theta):
        u = theta[:n_v].reshape(P, d, rows)
        return np.concatenate([np.einsum("de,per->pdr", m_pre, u).ravel(), theta[n_v:]])

    def pre_objective(theta):
        loss, grad = objective(to_v(theta))
        g_v = grad[:n_v].reshape(P, d, rows)
        return loss, np.concatenate([np.einsum("de,pdr->per", m_pre, g_v).ravel(), grad[n_v:]])

    x0 = np.zeros(n_v + P * rows)
    if start is not None and start.shape == x0.shape and np.isfinite(start).all():
        v0 = start[:n_v].reshape(P, d, rows)  # a solution in v: into u
        x0 = np.concatenate([np.einsum("de,pdr->per", m_inv, v0).ravel(), start[n_v:]])
    opt = minimize(
        pre_objective,
        x0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-14, "maxcor": 20, "maxls": 50},
    )
    theta = to_v(opt.x)
    # converged: every component of the (unpreconditioned) gradient within the tolerance, or
    # the loss stalled at float precision within 10x of it (not: the cap, a line-search fail)
    g_max = float(np.abs(objective(theta)[1]).max())
    converged = bool(g_max <= tol or (opt.status == 0 and g_max <= 10 * tol))
    v, c = unpack(theta)
    z = decision(v, c)
    scores, ctrl = [], []
    for f, te in enumerate(tests):
        te = np.asarray(te)
        zf, zc = z[te, f], z[te, k + f]
        scores.append(_softmax_scores(zf / 2) if rows == 1 else _softmax(zf).astype(np.float32))
        ctrl.append((zc[:, 0] > 0).astype(np.int64) if rows == 1 else zc.argmax(1))
    a = (v[-1] * inv_sd[-1][:, None]).T  # (rows, d)
    b = c[-1] - (shift[-1][:, None] * v[-1]).sum(0) - a @ m0
    return LayerFit(scores, ctrl, a.astype(np.float32), b.astype(np.float32), converged,
                    int(opt.nit), theta)  # fmt: skip
