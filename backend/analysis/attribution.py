"""The contribution graph of information flow routes (Ferrando & Voita 2024), from arrays.

At block l, position i's residual stream after the attention step is
y_i = x_i + sum_j z_ij + b: the stream before the block (x_i), the attention output split by
source position j (z_ij = sum over heads of weight(i, j) × value_j through the head's slice
of the output projection) and the output bias. Each contribution c in {x_i} ∪ {z_ij} gets the
importance max(0, |y|_1 - |y - c|_1) (how much closer to y it brings the stream than nothing),
and its share of the update is its importance over their sum. Edges: (l - 1, j) -> (l, i)
"attn" with z_ij's share, and (l - 1, i) -> (l, i) "resid" with x_i's share; the MLP acts on
one position and moves nothing between positions, so it has no edge of its own. Edges whose
share is below the threshold are pruned; the answer's route is every node and edge from which
the answer's node (n_layers, position) is reached over the kept edges.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StepShares:
    """One block's attention step, for each target position (rows)."""

    resid: np.ndarray  #: (n,) the share of the residual stream x_i in y_i
    attn: np.ndarray  #: (n, T) the share of source position j's part z_ij


def step_shares(residual: np.ndarray, parts: np.ndarray, update: np.ndarray) -> StepShares:
    """``residual`` (n, d) x_i, ``parts`` (n, T, d) z_ij, ``update`` (n, d) the whole attention
    output at i (the parts plus the output bias): each contribution's share of y = x + update."""
    x = np.asarray(residual, dtype=np.float64)
    z = np.asarray(parts, dtype=np.float64)
    y = x + np.asarray(update, dtype=np.float64)
    ny = np.abs(y).sum(-1)  # (n,)
    imp_x = np.maximum(0.0, ny - np.abs(y - x).sum(-1))
    imp_z = np.maximum(0.0, ny[:, None] - np.abs(y[:, None, :] - z).sum(-1))
    total = imp_x + imp_z.sum(-1)
    safe = np.where(total > 0, total, 1.0)
    return StepShares(resid=imp_x / safe, attn=imp_z / safe[:, None])


@dataclass(frozen=True)
class Edge:
    source: tuple[int, int]  #: (layer, position)
    target: tuple[int, int]
    weight: float  #: the share of the target's update
    kind: str  #: "attn" | "resid"
    route: bool  #: on the answer's route


@dataclass(frozen=True)
class Graph:
    n_layers: int
    n_positions: int
    position: int  #: the answer's position: its node is (n_layers, position)
    threshold: float
    edges: tuple[Edge, ...]
    route: frozenset  #: nodes (layer, position) on the answer's route


def flow_graph(resid: np.ndarray, attn: np.ndarray, position: int, threshold: float) -> Graph:
    """``resid`` (n_layers, T) and ``attn`` (n_layers, T, T): the shares of block l + 1's step
    (``step_shares`` per block). Edges with a share >= ``threshold`` are kept."""
    L, T = resid.shape
    edges: list[tuple] = []
    for li in range(L):
        for i in range(T):
            if resid[li, i] >= threshold:
                edges.append(((li, i), (li + 1, i), float(resid[li, i]), "resid"))
            for j in range(T):
                if attn[li, i, j] >= threshold and attn[li, i, j] > 0:
                    edges.append(((li, j), (li + 1, i), float(attn[li, i, j]), "attn"))
    into: dict = {}
    for e in edges:
        into.setdefault(e[1], []).append(e[0])
    route = {(L, position)}
    todo = deque([(L, position)])
    while todo:
        for src in into.get(todo.popleft(), []):
            if src not in route:
                route.add(src)
                todo.append(src)
    return Graph(
        n_layers=L,
        n_positions=T,
        position=position,
        threshold=threshold,
        edges=tuple(Edge(s, t, w, k, t in route) for s, t, w, k in edges),
        route=frozenset(route),
    )
