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


def test_dtype_auto_follows_cpu_flags(monkeypatch):
    assert models.pick_dtype("float16") is torch.float16
    expected = torch.bfloat16 if models.cpu_has_bf16() else torch.float32
    assert models.pick_dtype("auto") is expected
    with pytest.raises(LayerScopeError, match="Unknown dtype"):
        models.pick_dtype("int3")


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
