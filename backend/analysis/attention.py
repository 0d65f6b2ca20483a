"""Attention summaries (pure numpy): per-head sink share and entropy."""

from __future__ import annotations

import numpy as np


def sink_share(att: np.ndarray) -> np.ndarray:
    """Mass on the first token, averaged over query positions >= 1 (position 0 can only
    attend to itself in a causal model). ``att`` (..., T, T) -> (...)."""
    if att.shape[-1] < 2:
        raise ValueError("sink share needs at least 2 tokens")
    return att[..., 1:, 0].mean(axis=-1)


def entropy(att: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each query's attention, averaged over query positions >= 1."""
    p = np.clip(att[..., 1:, :], 0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=-1)
    return h.mean(axis=-1)


def top_keys(att: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` keys each head attends to most, by its attention averaged over query
    positions >= 1 (as ``sink_share``). ``att`` (..., T, T) -> (indices, weights), each
    (..., k'), k' = min(k, T), heaviest first."""
    if att.shape[-1] < 2:
        raise ValueError("top keys need at least 2 tokens")
    mean = att[..., 1:, :].mean(axis=-2)  # (..., T) mass per key
    k = min(k, mean.shape[-1])
    idx = np.argsort(-mean, axis=-1, kind="stable")[..., :k]
    return idx, np.take_along_axis(mean, idx, axis=-1)
