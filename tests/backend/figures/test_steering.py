"""The steering chart from a hand-made result: both curves, the per-label lines, inert labels."""

import numpy as np
import pytest

from backend.figures.steering import steering_figure
from backend.views import steering as S
from tests.backend.figures._strings import BOLD, assert_inert


def test_steering_figure_draws_direction_control_and_toward_lines():
    req = S.Request(model="m", set_name="s", layer=2, direction="means", alphas=(-1, 0, 1))
    res = S.Result(
        request=req, alphas=[-1.0, 0.0, 1.0], prompts=["p"], prompt_labels=["x"],
        direction=[1.0], control=[1.0], direction_norm=1.0, typical_norms=[1.0],
        continuations={"direction": [["a"] * 3], "control": [["a"] * 3]},
        first_tokens={"direction": [["a"] * 3], "control": [["a"] * 3]},
        flip_rate={"direction": [0.5, 0.0, 0.75], "control": [0.1, 0.0, 0.05]},
        toward={"direction": {BOLD: [0.4, 0.0, 0.0]}, "control": {BOLD: [0.0, 0.0, 0.0]}},
        labels=[BOLD, "y"],
    )  # fmt: skip
    fig = steering_figure(res)
    names = [t.name for t in fig.data]
    assert names[:2] == ["means direction", "random control"] and len(fig.data) == 4
    np.testing.assert_allclose(fig.data[0].y, [0.5, 0.0, 0.75])
    np.testing.assert_allclose(fig.data[1].y, [0.1, 0.0, 0.05])
    assert fig.data[2].line.dash == "dot" and fig.data[3].line.dash == "dash"
    assert tuple(fig.layout.yaxis.range) == (0, 1.02) and "layer 2" in fig.layout.title.text
    assert_inert(fig)
    with pytest.raises(ValueError):
        steering_figure(S.Result(**{**res.__dict__, "flip_rate": None}))
