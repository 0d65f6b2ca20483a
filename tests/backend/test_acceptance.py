"""The acceptance harness (benchmarks/views.py) on the real configs of GPT-2 small,
Pythia-160m, Qwen2.5-0.5B and Llama-3.2-1B scaled down (2 layers, d = 64, a 4,096-token
byte-level BPE): the real extract job, then every view's compute, figure and JSON on each
architecture, so the harness cannot rot between its (long) real-size runs."""

import pytest

from backend import models
from benchmarks.views import accept

pytestmark = pytest.mark.slow
VIEWS = {"trajectories", "similarity", "probes", "lens", "stats", "attention", "patching"}


@pytest.mark.parametrize("name", ["gpt2", "pythia", "qwen", "llama"])
def test_every_view_renders_on_each_architecture(name, tmp_path):
    info = accept(name, tmp_path, 600, small=True, repeat=1, log=lambda _: None)
    rows = info["rows"]
    assert {r.view.split()[0].rstrip(",") for r in rows} == VIEWS
    assert all(r.fig_bytes > 100 and r.first > 0 for r in rows)
    assert all(r.cached is not None for r in rows)
    assert info["tokens"] >= 500  # ~600 asked: the first word of a prompt splits
    expect = {"gpt2": "float32", "pythia": "float16", "qwen": "bfloat16", "llama": "bfloat16"}
    if not models.cpu_has_half_kernels():  # no AMX / AVX512-bf16: half checkpoints run in fp32
        expect = dict.fromkeys(expect, "float32")
    assert info["dtype"] == expect[name]  # dtype auto = the checkpoint's own (see above)
