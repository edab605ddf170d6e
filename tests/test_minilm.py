"""The real bundled all-MiniLM-L6-v2: the default path a new user takes, end to end."""

import json

from typer.testing import CliRunner

from mtl.cli import app
from mtl.config import DEFAULT_BACKBONE, ModelConfig


def test_quickstart_smoke_run_on_the_real_minilm(tmp_path):
    output = tmp_path / "quick"
    result = CliRunner().invoke(app, ["quickstart", "--output", str(output), "--max-steps", "2"])
    assert result.exit_code == 0, result.output
    config = ModelConfig.load(output)
    assert config.backbone == DEFAULT_BACKBONE
    assert config.input_names == ("input_ids", "token_type_ids", "attention_mask")
    metrics = json.loads((output / "metrics.json").read_text())["validation"]
    assert set(metrics) == {"topic", "sentiment"}

    predicted = CliRunner().invoke(app, ["predict", str(output), "The team won the championship final."])
    assert predicted.exit_code == 0, predicted.output
    row = json.loads(predicted.stdout)
    assert set(row["predictions"]) == {"topic", "sentiment"}
