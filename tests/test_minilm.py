"""The real bundled all-MiniLM-L6-v2: the default path a new user takes, end to end."""

import json

import pytest
from typer.testing import CliRunner

from mtl.artifacts.checkpoint import read_model_config
from mtl.cli import app
from mtl.config import DEFAULT_BACKBONE


@pytest.mark.slow
def test_quickstart_smoke_run_on_the_real_minilm(tmp_path):
    output = tmp_path / "quick"
    result = CliRunner().invoke(app, ["quickstart", "--output", str(output), "--max-steps", "2", "--no-bench"])
    assert result.exit_code == 0, result.output
    model, onnx = output / "model", output / "onnx"
    config = read_model_config(model)
    assert config.backbone == DEFAULT_BACKBONE
    assert config.input_names == ("input_ids", "token_type_ids", "attention_mask")
    metrics = json.loads((model / "metrics.json").read_text())["validation"]
    assert set(metrics) == {"topic", "sentiment"}
    manifest = json.loads((onnx / "manifest.json").read_text())
    assert set(manifest["variants"]) == {"fp32", "int8"}
    assert set(manifest["variants"]["int8"]["validation"]["real_data"]) == {"topic", "sentiment"}

    text = "The team won the championship final."
    rows = []
    for folder in (model, onnx):
        predicted = CliRunner().invoke(app, ["predict", str(folder), text, "--task", "topic"])
        assert predicted.exit_code == 0, predicted.output
        rows.append(json.loads(predicted.stdout))
    assert set(rows[0]["predictions"]) == {"topic"}
    torch_probs, onnx_probs = (r["predictions"]["topic"]["probabilities"] for r in rows)
    assert max(abs(torch_probs[k] - onnx_probs[k]) for k in torch_probs) < 0.05  # int8 against fp32 PyTorch
