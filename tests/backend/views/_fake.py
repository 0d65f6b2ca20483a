"""A store's worth of fake runs for the view tests: no model is loaded."""

import numpy as np

from backend.records import CapturedRun, make_run_id


def fake_info(n_layers: int, d: int):
    """The fields ``Store.upsert_model`` reads, for model id "m"."""

    class Info:
        model_id, ref, name, architecture = "m", "fake", "fake", "Fake"
        n_layers, d_model, vocab_size, has_lm_head, is_causal, revision = (
            0, 0, 10, True, True, None)  # fmt: skip

        def to_json(self):
            return f'{{"n_layers": {self.n_layers}}}'

    info = Info()
    info.n_layers, info.d_model = n_layers, d
    return info


def fake_run(i: int, hidden: np.ndarray) -> CapturedRun:
    """Run i of model "m": words w{i}_{pos}, the first token special, these states."""
    n = hidden.shape[1]
    text = " ".join(f"w{i}_{p}" for p in range(n))
    return CapturedRun(
        run_id=make_run_id("m", text, {}),
        text=text,
        token_ids=list(range(n)),
        tokens=text.split(),
        offsets=[(0, 1)] * n,
        special=[p == 0 for p in range(n)],
        hidden=hidden,
    )
