"""The prefix tree of one prompt's sampled continuations, and when each token was decided.

Part of the Generation view (re-exported by ``backend.views.generation``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backend.store import Store

#: the prefix tree's branches carry run counts only: sampling stores the emitted tokens and
#: every layer's states, not the model's probability of each branch
TREE_NOTE_P = (
    "box width = share of runs; hover: the model's probability of each branch given its "
    "prefix (read from the stored last layer, fp16)"
)
TREE_NOTE = (
    "counts only: the model's probability of each branch is not stored with the samples "
    "(edge width = number of runs)"
)


def prefix_tree(
    continuations: list[list[str]],
    run_ids: list[str] | None = None,
    probabilities: list[list[float]] | None = None,
) -> dict:
    """The prefix tree of one prompt's sampled continuations.

    Root = the prompt (every run); each child = one next token after the shared prefix, with
    ``count`` = how many runs took that branch and ``runs`` = their indices (or ``run_ids``).
    Branches are ordered by count, then token. ``probability`` is None (see ``TREE_NOTE``).
    """
    names = run_ids if run_ids is not None else list(range(len(continuations)))

    def node(token, members, depth):
        kids: dict[str, list[int]] = {}
        for i in members:
            if depth < len(continuations[i]):
                kids.setdefault(continuations[i][depth], []).append(i)
        children = [
            node(t, m, depth + 1)
            for t, m in sorted(kids.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ]
        prob = None
        if probabilities is not None and token is not None and members:
            prob = float(probabilities[members[0]][depth - 1])  # same prefix: same distribution
        return {
            "token": token,
            "count": len(members),
            "probability": prob,
            "runs": [names[i] for i in members],
            "children": children,
        }

    tree = node(None, list(range(len(continuations))), 0)
    tree["note"] = TREE_NOTE if probabilities is None else TREE_NOTE_P
    return tree


def decided_at(
    lens_top1: np.ndarray, token_ids: list[int], n_prompt_tokens: int
) -> list[int | None]:
    """For each generated token, the first layer from which the logit lens's top-1 at the
    position before it equals it and stays equal up to the last layer (None: the token was
    sampled off the top, so no layer had it on top at the end).

    lens_top1: (n_layers + 1, n_tokens) top-1 token id per layer and position of the run;
    token_ids: the run's tokens (prompt + generated)."""
    out: list[int | None] = []
    for t in range(n_prompt_tokens, len(token_ids)):
        on = lens_top1[:, t - 1] == token_ids[t]  # position t-1 predicts token t
        if not on[-1]:
            out.append(None)
            continue
        first = len(on) - 1
        while first > 0 and on[first - 1]:
            first -= 1
        out.append(int(first))
    return out


def commitment_strip(store: Store, lm, run_id: str) -> pd.DataFrame:
    """One row per generated token of a stored run: step, token, the layer it was decided at
    (``decided_at``) and the final layer's probability of it."""
    import torch

    from backend.analysis.lens import lens_logits
    from backend.views import lens as lens_view

    hidden = store.run_layers(run_id)
    toks = store.tokens(run_id)
    res = lens_view.lens_of(lm, hidden, toks["token"].tolist(), k=1)
    n_p = int(store.get_run(run_id)["n_prompt_tokens"])
    ids = toks["token_id"].astype(int).tolist()
    first = decided_at(res.lens.top_ids[:, :, 0], ids, n_p)
    with torch.inference_mode():  # the model's own next-token distribution (last layer)
        logits = lens_logits(torch.as_tensor(hidden[-1:]), lm.final_norm, lm.unembed)[0]
        probs = torch.softmax(logits.float(), -1).numpy()
    return pd.DataFrame(
        {
            "step": range(1, len(first) + 1),
            "token": toks["token"].iloc[n_p:].tolist(),
            "decided_at_layer": first,
            "p_token": [float(probs[t - 1, ids[t]]) for t in range(n_p, len(ids))],
        }
    )
