"""The checkpoint folder's layout and its checks, without torch (the bench and the CLI check folders in
processes that must not import it). `mtl.model` writes and reads what this describes."""

from __future__ import annotations

from pathlib import Path

from mtl.config import MODEL_CONFIG_FILE, ModelConfig
from mtl.errors import CheckpointError

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


def read_model_config(folder: Path) -> ModelConfig:
    try:
        return ModelConfig.load(folder)
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{folder / MODEL_CONFIG_FILE}: not a valid mtl-onnx model config ({err})") from None
