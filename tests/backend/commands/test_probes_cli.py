"""`probes` CLI: encoders pool by mean by default (their last token is [SEP]), labelled."""

from backend.cli import main
from tests.backend.commands.test_readout_commands import labelled, run_json  # noqa: F401


def test_encoder_default_pool_is_mean_and_labelled(db, labelled, tiny_model_dir, capsys):  # noqa: F811
    model = str(tiny_model_dir("bert"))
    argv = ["extract", "--model", model, "--prompts", str(labelled), "--set", "lab"]
    assert main([*argv, "--label-column", "label", "--json"]) == 0
    opts = [
        "--model",
        model,
        "--set",
        "lab",
        "--folds",
        "3",
        "--baseline",
        "none",
        "--layers",
        "1:2",
    ]
    code, r, _ = run_json(capsys, "probe", *opts)
    assert code == 0, r
    assert r["pool"] == "mean" and "encoder" in r["pool_label"]
    assert r["interval_method"].startswith("bootstrap over 24 prompts")
    code, r, _ = run_json(capsys, "probe", *opts, "--pool", "last")
    assert r["pool"] == "last" and r["pool_label"] == "last token (chosen)"
    capsys.readouterr()
    assert main(["probe", *opts]) == 0
    out = capsys.readouterr().out
    assert "pooled: mean over tokens: the default for encoder models" in out
    assert "95% interval: bootstrap over 24 prompts" in out
