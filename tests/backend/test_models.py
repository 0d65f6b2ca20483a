"""Model resolution and loading through the same local-dir path a user's model takes."""

import pytest
import torch

from backend import models
from backend.errors import LayerScopeError
from tests.conftest import FAMILIES, TINY


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_models_load_with_their_tiny_dims(tiny_model_dir, family):
    lm = models.load_model(str(tiny_model_dir(family)), dtype="float32")
    info = lm.info
    assert info.n_layers == TINY["layers"] == len(lm.blocks)
    assert info.d_model == TINY["hidden"]
    assert info.has_lm_head == (family != "bert")
    assert info.is_causal == (family != "bert")
    assert (lm.final_norm is not None) == (family != "bert")
    assert lm.model.training is False
    if info.has_lm_head:
        assert info.unembed_path and info.final_norm_path


def test_fingerprint_is_stable_and_content_based(tiny_model_dir, tmp_path):
    from tests.conftest import save_tiny

    a = models.resolve(str(tiny_model_dir("gpt2"))).model_id
    assert models.resolve(str(tiny_model_dir("gpt2"))).model_id == a
    other = save_tiny("gpt2", tmp_path / "other", seed=1)
    assert models.resolve(str(other)).model_id != a


def test_dtype_names_and_auto_without_a_model():
    assert models.pick_dtype("float16") is torch.float16
    assert models.pick_dtype("bfloat16") is torch.bfloat16
    # the model is unknown: fp32, whatever the CPU's bf16 kernels (it was bf16 with AMX)
    assert models.pick_dtype("auto") is torch.float32
    assert models.pick_dtype("auto", "cuda") is torch.float32
    with pytest.raises(LayerScopeError, match="Unknown dtype"):
        models.pick_dtype("int3")


def _copy_with_config(src, dst, **changes):
    """A copy of a saved tiny model whose config.json has ``changes`` (None removes a key)."""
    import json
    import shutil

    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_dtype_auto_is_the_checkpoints_own_dtype(tiny_model_dir, tmp_path, monkeypatch):
    """Expected dtypes are written out, not recomputed with the helper under test."""
    monkeypatch.setenv("LAYERSCOPE_CPU_HALF", "1")  # a CPU with bf16 kernels
    fp32 = tiny_model_dir("gpt2")
    bf16 = _copy_with_config(fp32, tmp_path / "bf16", dtype="bfloat16")
    old = _copy_with_config(fp32, tmp_path / "old", dtype=None, torch_dtype="float16")
    assert models.pick_dtype("auto", model=str(fp32)) is torch.float32
    assert models.pick_dtype("auto", "cuda", model=str(fp32)) is torch.float32
    assert models.pick_dtype("auto", model=str(bf16)) is torch.bfloat16
    assert models.pick_dtype("auto", model=str(old)) is torch.float16
    assert models.pick_dtype("float32", model=str(bf16)) is torch.float32  # explicit wins
    assert models.pick_dtype("auto", model={"torch_dtype": "torch.bfloat16"}) is torch.bfloat16
    assert models.pick_dtype("auto", model={}) is torch.float32
    assert models.pick_dtype("auto", model="demo") is torch.float32
    # loading with auto follows the checkpoint, like from_pretrained(dtype="auto")
    assert models.load_model(str(fp32)).dtype is torch.float32
    lm = models.load_model(str(bf16))
    assert lm.dtype is torch.bfloat16 and lm.info.dtype == "bfloat16"
    assert next(lm.model.parameters()).dtype is torch.bfloat16


def test_dtype_auto_without_a_config_dtype_reads_the_weights(tiny_model_dir, tmp_path, monkeypatch):
    import transformers as tf

    monkeypatch.setenv("LAYERSCOPE_CPU_HALF", "1")

    src = tiny_model_dir("gpt2")
    m = tf.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    m.save_pretrained(tmp_path / "w")
    _copy_with_config(tmp_path / "w", tmp_path / "nocfg", dtype=None, torch_dtype=None)
    assert models.pick_dtype("auto", model=str(tmp_path / "nocfg")) is torch.bfloat16
    plain = _copy_with_config(src, tmp_path / "plain", dtype=None, torch_dtype=None)
    assert models.pick_dtype("auto", model=str(plain)) is torch.float32


def test_half_checkpoints_compute_in_fp32_on_a_cpu_without_half_kernels(
    tiny_model_dir, tmp_path, monkeypatch
):
    """No AMX / AVX512-bf16: a bf16 matmul is ~100x slower than fp32 there, and fp32 holds
    bf16 and fp16 weights exactly; explicit dtypes and other devices are unaffected."""
    monkeypatch.setenv("LAYERSCOPE_CPU_HALF", "0")
    fp32 = tiny_model_dir("gpt2")
    bf16 = _copy_with_config(fp32, tmp_path / "bf16", dtype="bfloat16")
    fp16 = _copy_with_config(fp32, tmp_path / "fp16", dtype="float16")
    assert models.pick_dtype("auto", model=str(bf16)) is torch.float32
    assert models.pick_dtype("auto", model=str(fp16)) is torch.float32
    assert models.pick_dtype("auto", "cuda", model=str(bf16)) is torch.bfloat16
    assert models.pick_dtype("bfloat16", model=str(bf16)) is torch.bfloat16
    assert models.load_model(str(bf16)).dtype is torch.float32
    monkeypatch.setenv("LAYERSCOPE_CPU_HALF", "1")
    assert models.pick_dtype("auto", model=str(bf16)) is torch.bfloat16


def test_offline_hub_id_gives_one_line_message(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(LayerScopeError) as e:
        models.resolve("surely-not/a-cached-model")
    msg = str(e.value)
    assert "not in the local Hugging Face cache" in msg and "\n" not in msg


@pytest.mark.parametrize("ref,match", [("./no/such/dir", "No model directory"), ("", "No model")])
def test_bad_refs(ref, match):
    with pytest.raises(LayerScopeError, match=match):
        models.resolve(ref)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(LayerScopeError, match=r"config\.json"):
        models.resolve(str(tmp_path))


def test_unavailable_device(tiny_model_dir):
    with pytest.raises(LayerScopeError, match="not available"):
        models.load_model(str(tiny_model_dir("gpt2")), device="cuda:7")


# -- revisions: training checkpoints as `<model>@<revision>` ---------------------------------
needs_checkpoints = pytest.mark.skipif(
    not models.checkpoints("demo"), reason="no bundled demo checkpoints"
)


@needs_checkpoints
def test_bundled_checkpoints_are_revisions_of_demo():
    ck = models.checkpoints("demo")
    steps = [n for n, _ in ck]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == 3000 and len(ck) >= 9
    assert all(ref == f"demo@step{n}" for n, ref in ck)
    first, mid = models.resolve("demo@step0"), models.resolve(f"demo@step{steps[3]}")
    # step 0 is the untrained twin's files, yet its own model (the revision is fingerprinted)
    assert first.path == models.resolve("demo-untrained").path
    assert first.model_id != models.resolve("demo-untrained").model_id
    assert (first.revision, mid.revision) == ("step0", f"step{steps[3]}")
    assert mid.path.name == f"step{steps[3]}" and mid.model_id != first.model_id
    assert models.family(f"demo@step{steps[3]}") == "demo" and models.step_of("x@step12") == 12
    assert models.step_of("demo") is None and models.step_of("gpt2@main") is None


@needs_checkpoints
def test_a_bundled_checkpoint_loads_in_float32_from_fp16_weights():
    ref = models.checkpoints("demo")[-1][1]
    assert models.pick_dtype("auto", model=ref) is torch.float32
    lm = models.load_model(ref)
    assert lm.info.ref == ref and lm.info.revision == "step3000"
    assert next(lm.model.parameters()).dtype is torch.float32


@pytest.mark.parametrize(
    "ref, match",
    [
        ("demo@step123", r"no checkpoint 'step123'; its checkpoints are step0, "),
        ("demo-seed1@step5", "has no training checkpoints"),
    ],
)
@needs_checkpoints
def test_unknown_checkpoints_say_which_exist(ref, match):
    with pytest.raises(LayerScopeError, match=match):
        models.resolve(ref)


def _hub_cache(root, repo: str, revisions: dict, tiny):
    """A Hugging Face cache layout (refs/<revision> -> snapshots/<commit>/) built by hand."""
    import shutil

    base = root / f"models--{repo.replace('/', '--')}"
    for rev, seed in revisions.items():
        commit = f"{seed:040d}"
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / rev).write_text(commit)
        shutil.copytree(tiny(seed), base / "snapshots" / commit)
    return base


def test_hub_revisions_resolve_offline_to_their_own_snapshot(monkeypatch, tmp_path):
    """`org/model@step3000` (Pythia's revision names) goes through the hub path: with the
    hub offline, snapshot_download finds the revision's snapshot in the local cache."""
    from tests.conftest import save_tiny

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    base = _hub_cache(
        tmp_path / "hub",
        "org/tiny",
        {"step1000": 1, "step3000": 2},
        lambda seed: save_tiny("gpt2", tmp_path / f"w{seed}", seed=seed),
    )
    a, b = models.resolve("org/tiny@step1000"), models.resolve("org/tiny@step3000")
    assert a.path == base / "snapshots" / f"{1:040d}" and a.revision == "step1000"
    assert b.path == base / "snapshots" / f"{2:040d}" and b.revision == "step3000"
    assert a.model_id != b.model_id
    assert models.load_model("org/tiny@step3000").info.revision == "step3000"
    with pytest.raises(LayerScopeError, match="not in the local Hugging Face cache"):
        models.resolve("org/tiny@step9")


def test_composed_tanh_gelu_is_swapped_for_the_fused_kernel_with_the_same_states(
    tiny_model_dir, monkeypatch
):
    """GPT-2's gelu_new is seven elementwise ops; the loaded model runs the fused kernel and
    its states and logits match the checkpoint's own modules (HF, unmodified) to float rounding."""
    import transformers as tf

    path = tiny_model_dir("gpt2")
    lm = models.load_model(str(path), dtype="float32")
    acts = [type(m.mlp.act).__name__ for m in lm.blocks]
    assert acts == ["TanhGELU"] * len(lm.blocks)
    plain = tf.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    assert type(plain.transformer.h[0].mlp.act).__name__ == "NewGELUActivation"
    ids = torch.tensor([[2, 5, 9, 11, 7, 4, 8]])
    with torch.inference_mode():
        ours = lm.model(input_ids=ids, output_hidden_states=True)
        ref = plain(input_ids=ids, output_hidden_states=True)
    for a, b in zip(ours.hidden_states, ref.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.logits, ref.logits, rtol=1e-5, atol=1e-5)

    monkeypatch.setenv("LAYERSCOPE_FUSED_GELU", "0")
    kept = models.load_model(str(path), dtype="float32")
    assert type(kept.blocks[0].mlp.act).__name__ == "NewGELUActivation"


def test_other_activations_are_left_alone(tiny_model_dir):
    lm = models.load_model(str(tiny_model_dir("gpt_neox")), dtype="float32")
    assert models.fuse_activations(lm.model) == 0
