"""Training as an axis (pure numpy): the per-checkpoint numbers of the Training view.

Reuses the per-model analyses (``similarity.model_cka`` for CKA, ``projection.project`` for
the shared PCA); what is new here is only what compares checkpoints: CKA of each checkpoint
to a reference checkpoint per layer, the step from which a curve stays above a level, and
the accuracy of a two-label behaviour from answer margins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backend.analysis import similarity as similarity_analysis


def per_layer_cka(a: np.ndarray, b: np.ndarray, layers: Sequence[int]) -> np.ndarray:
    """Linear CKA of the same units in two models, layer by layer: the diagonal of
    ``similarity.model_cka`` (what the Similarity view's model × model heatmap shows).
    a, b: (n_layers_sel, n_units, d). Returns (n_layers_sel,)."""
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"the two stacks differ in layers or units: {a.shape} vs {b.shape}")
    return np.diag(similarity_analysis.model_cka(a, b, layers, layers).values).astype(np.float64)


def onset(steps: Sequence[int], values: Sequence[float], level: float) -> int | None:
    """The first step from which ``values`` stay at or above ``level`` at every later
    checkpoint (NaN counts as below); None when the last value is below it."""
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=-np.inf)
    ok = v >= level
    if not len(ok) or not ok[-1]:
        return None
    below = np.flatnonzero(~ok)
    return int(steps[below[-1] + 1]) if len(below) else int(steps[0])


def pair_accuracy(margins: np.ndarray, positive: np.ndarray) -> float:
    """Share of (prompt, answer pair) cells where the answer matching the prompt's label is
    the more likely one. margins: (n_prompts, n_pairs) logit(first) − logit(second) of each
    pair; positive: (n_prompts,) bool, True where the first answer is the right one. A tie
    counts as wrong."""
    m = np.asarray(margins, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    if m.ndim != 2 or len(m) != len(pos):
        raise ValueError("margins must be (n_prompts, n_pairs) with one label per prompt")
    if m.size == 0:
        return float("nan")
    right = np.where(pos[:, None], m > 0, m < 0)
    return float(right.mean())
