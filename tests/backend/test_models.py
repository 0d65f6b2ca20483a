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


def test_dtype_auto_is_the_checkpoints_own_dtype(tiny_model_dir, tmp_path):
    """Expected dtypes are written out, not recomputed with the helper under test."""
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


def test_dtype_auto_without_a_config_dtype_reads_the_weights(tiny_model_dir, tmp_path):
    import transformers as tf

    src = tiny_model_dir("gpt2")
    m = tf.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    m.save_pretrained(tmp_path / "w")
    _copy_with_config(tmp_path / "w", tmp_path / "nocfg", dtype=None, torch_dtype=None)
    assert models.pick_dtype("auto", model=str(tmp_path / "nocfg")) is torch.bfloat16
    plain = _copy_with_config(src, tmp_path / "plain", dtype=None, torch_dtype=None)
    assert models.pick_dtype("auto", model=str(plain)) is torch.float32


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
