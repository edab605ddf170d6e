"""The checkpoint folder's layout, its model config file and its checks, without torch (the bench and the CLI check
folders in processes that must not import it). `mtl.model` writes and reads what this describes.

    config.json          ModelConfig: tasks and labels in order, pooling, backbone id, input names
    encoder/config.json  the encoder's own Hugging Face config
    model.safetensors    every weight: `encoder.backbone.*` and `heads.<task>.*`
    tokenizer files      whatever the tokenizer's save_pretrained writes (tokenizer.json, ...)
    train_config.json    the TrainConfig of the run, metrics.json its validation figures
    checkpoints/         the Trainer's per-epoch checkpoints, for --resume
"""

from __future__ import annotations

from pathlib import Path

from mtl.artifacts.jsonfile import read_json, write_json
from mtl.config import CONFIG_FORMAT, ModelConfig
from mtl.errors import CheckpointError

MODEL_CONFIG_FILE = "config.json"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
CHECKPOINTS_DIR = "checkpoints"
WEIGHTS_FILE = "model.safetensors"
ENCODER_CONFIG_DIR = "encoder"
CHECKPOINT_FILES = (MODEL_CONFIG_FILE, f"{ENCODER_CONFIG_DIR}/config.json", WEIGHTS_FILE, "tokenizer_config.json")


def check_checkpoint(folder: Path) -> Path:
    """The folder, if it holds every file of a checkpoint; otherwise one error naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder}: not a complete mtl-onnx checkpoint (missing {', '.join(missing)})")
    return folder


def is_checkpoint(folder: Path) -> bool:
    """Whether the folder holds a finished model of this tool (its config.json is ours, not any Hugging Face model's)."""
    try:
        return read_json(Path(folder) / MODEL_CONFIG_FILE).get("format") == CONFIG_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_model_config(folder: Path, config: ModelConfig) -> None:
    write_json(Path(folder) / MODEL_CONFIG_FILE, config.to_dict())


def read_model_config(folder: Path) -> ModelConfig:
    try:
        return ModelConfig.from_dict(read_json(Path(folder) / MODEL_CONFIG_FILE))
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{folder / MODEL_CONFIG_FILE}: not a valid mtl-onnx model config ({err})") from None
