"""The checkpoint folder's layout, its model config file and its checks, without torch (the bench and the CLI check
folders in processes that must not import it). `mtl.model` writes and reads what this describes.

    config.json          ModelConfig: tasks and labels in order, pooling, backbone id, input names
    encoder/config.json  the encoder's own Hugging Face config
    model.safetensors    every weight: `encoder.backbone.*` and `heads.<task>.*`
    tokenizer files      whatever the tokenizer's save_pretrained writes (tokenizer.json, ...)
    train_config.json    the TrainConfig of the run, metrics.json its validation figures
    data.json            the files it was trained and validated on, and their text and label fields
    checkpoints/         the Trainer's per-epoch checkpoints, for --resume
"""

from __future__ import annotations

from pathlib import Path

from mtl.artifacts.encoder_config import position_limit
from mtl.artifacts.io_spec import token_inputs
from mtl.artifacts.jsonfile import read_json, write_json
from mtl.config import CONFIG_FORMAT, ModelConfig
from mtl.errors import CheckpointError

MODEL_CONFIG_FILE = "config.json"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
DATA_FILE = "data.json"  # the labelled files of the run, so that export can check int8 on them
RUN_CONFIG_FILE = "run_config.json"  # in a run folder while it trains: what --resume must match
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
    """Whether the folder holds a finished model of this tool (its config.json is ours, not any Hugging Face
    model's)."""
    try:
        return read_json(Path(folder) / MODEL_CONFIG_FILE).get("format") == CONFIG_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_model_config(folder: Path, config: ModelConfig) -> None:
    write_json(Path(folder) / MODEL_CONFIG_FILE, config.to_dict())


def read_model_config(folder: Path) -> ModelConfig:
    """The checkpoint's ModelConfig, checked against the schema (types, labels, inputs) and against its encoder
    (max_length within the encoder's positions)."""
    path = Path(folder) / MODEL_CONFIG_FILE
    try:
        config = ModelConfig.from_dict(read_json(path))
        token_inputs(config.input_names)
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # JSONDecodeError is a ValueError
        detail = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        raise CheckpointError(f"{path}: not a valid mtl-onnx model config ({detail})") from None
    encoder_config = Path(folder) / ENCODER_CONFIG_DIR / "config.json"
    if encoder_config.is_file():
        try:
            limit = position_limit(read_json(encoder_config))
        except (ValueError, AttributeError) as err:
            raise CheckpointError(f"{encoder_config}: not a valid encoder config ({err})") from None
        if config.max_length > limit:
            raise CheckpointError(f"{path}: max_length {config.max_length} is more than the encoder's {limit} "
                                  f"positions")
    return config


def write_data_record(folder: Path, files: dict[str, dict[str, Path | None]], text_field: str,
                      label_field: str) -> None:
    """{task: {"train": path, "validation": path or None}} as absolute paths, with the fields they were read by."""
    tasks = {task: {kind: str(Path(path).resolve()) if path else None for kind, path in paths.items()}
             for task, paths in files.items()}
    write_json(Path(folder) / DATA_FILE, {"tasks": tasks, "text_field": text_field, "label_field": label_field})


def recorded_validation_files(folder: Path) -> tuple[dict[str, Path], str, str, list[str]]:
    """(task -> validation file, text field, label field, notes) from the checkpoint's data record; files that are
    no longer there are left out, with a note each. A checkpoint without a record gives no files."""
    try:
        record = read_json(Path(folder) / DATA_FILE)
        tasks = record["tasks"]
        text_field, label_field = str(record["text_field"]), str(record["label_field"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}, "text", "label", []
    files, notes = {}, []
    for task, paths in tasks.items():
        path = paths.get("validation") if isinstance(paths, dict) else None
        if path and Path(path).is_file():
            files[str(task)] = Path(path)
        elif path:
            notes.append(f"the validation file of task {task} that the checkpoint records is gone ({path})")
    return files, text_field, label_field, notes
