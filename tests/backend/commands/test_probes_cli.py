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
    # the error analysis across layers travels in the JSON: each wrong or borderline prompt
    # at the best layer with its margin at every layer, the mistakes listed among them
    errs = r["errors_at_best"]
    assert all(len(e["margins"]) == 2 and e["at_layer"] in ("wrong", "borderline") for e in errs)
    assert {m["run_id"] for m in r["misclassified_at_best"]} <= {e["run_id"] for e in errs}
    best = r["layers"].index(r["best_layer"])
    assert all((e["margins"][best] > 0) == (e["at_layer"] == "borderline") for e in errs)
    assert isinstance(r["group_accuracy_at_best"], dict)
    code, r, _ = run_json(capsys, "probe", *opts, "--pool", "last")
    assert r["pool"] == "last" and r["pool_label"] == "last token (chosen)"
    capsys.readouterr()
    assert main(["probe", *opts]) == 0
    out = capsys.readouterr().out
    assert "pooled: mean over tokens: the default for encoder models" in out
    assert "95% interval: bootstrap over 24 prompts" in out
