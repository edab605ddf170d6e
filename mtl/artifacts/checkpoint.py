"""The checkpoint folder's layout, its model config file and its checks, without torch (the bench and the CLI check
folders in processes that must not import it). `mtl.model` writes and reads what this describes.

    config.json          ModelConfig: tasks and labels in order, pooling, backbone id, input names
    encoder/config.json  the encoder's own Hugging Face config
    model.safetensors    every weight: `encoder.backbone.*` and `heads.<task>.*`
    tokenizer files      whatever the tokenizer's save_pretrained writes (tokenizer.json, ...)
    train_config.json    the TrainConfig of the run, metrics.json its validation figures
    versions.json        the versions of Python and of the libraries it was trained with (as a manifest records
                         those it was exported with); checkpoints saved before it existed have none
    data.json            the files it was trained and validated on (with each one's size and sha256), and
                         their text and label fields
    checkpoints/         the Trainer's per-epoch checkpoints, for --resume
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mtl.artifacts.digests import FileDigest, stream_digest
from mtl.artifacts.encoder_config import position_limit, size_problems
from mtl.artifacts.environment import library_versions
from mtl.artifacts.io_spec import token_inputs
from mtl.artifacts.jsonfile import read_json, write_json
from mtl.config import CONFIG_FORMAT, ModelConfig
from mtl.errors import CheckpointError

MODEL_CONFIG_FILE = "config.json"
TRAIN_CONFIG_FILE = "train_config.json"
METRICS_FILE = "metrics.json"
VERSIONS_FILE = "versions.json"
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
            encoder = read_json(encoder_config)
            # Before anything is built from it: a tampered size must not make the tool allocate gigabytes.
            wrong = size_problems(encoder) if isinstance(encoder, dict) else ["not a JSON object"]
            if wrong:
                raise CheckpointError(f"{encoder_config}: not a valid encoder config ({'; '.join(wrong)})")
            limit = position_limit(encoder)
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{encoder_config}: not a valid encoder config ({err})") from None
        if config.max_length > limit:
            raise CheckpointError(f"{path}: max_length {config.max_length} is more than the encoder's {limit} "
                                  f"positions")
    return config


def write_library_versions(folder: Path) -> None:
    write_json(Path(folder) / VERSIONS_FILE, library_versions())


def write_data_record(folder: Path, files: dict[str, dict[str, Path | None]], text_field: str,
                      label_field: str, digests: dict[Path, FileDigest]) -> None:
    """{task: {"train": path, "validation": path or None}} as absolute paths, with the fields they were read by
    and each file's size and sha256 as it was read for training (`digests`; {"fingerprints": {path: {"size",
    "sha256"}}}): export uses a recorded file only while it still holds what the model was trained on. A file
    that is not a regular one (a FIFO, stdin) has no digest: it cannot be read again."""
    tasks = {task: {kind: str(Path(path).resolve()) if path else None for kind, path in paths.items()}
             for task, paths in files.items()}
    fingerprints = {str(Path(path).resolve()): digest.to_dict() for path, digest in sorted(digests.items())}
    write_json(Path(folder) / DATA_FILE, {"tasks": tasks, "text_field": text_field, "label_field": label_field,
                                          "fingerprints": fingerprints})


def recorded_validation_files(folder: Path) -> tuple[dict[str, Path], str, str, list[str]]:
    """(task -> validation file, text field, label field, notes) from the checkpoint's data record. A folder may
    come from anyone, and its record may name any file on this machine: a file is used only if it is a regular
    file of the size and sha256 recorded at training, and is otherwise left out with a note that names it and
    says why, never anything of its content. A checkpoint without a record gives no files."""
    path = Path(folder) / DATA_FILE
    if not path.is_file():
        return {}, "text", "label", []
    try:
        record = read_json(path)
        tasks, fingerprints = record["tasks"], record.get("fingerprints") or {}
        text_field, label_field = record["text_field"], record["label_field"]
        if not all(isinstance(v, dict) for v in (tasks, fingerprints)) or not all(
                isinstance(v, str) for v in (text_field, label_field)):
            raise TypeError("not an object of the expected fields")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        reason = f"missing key {err}" if isinstance(err, KeyError) else str(err)
        return {}, "text", "label", [f"{path}: not a valid data record ({reason}), so no recorded validation "
                                     f"file is used; give labelled data with --validation-data TASK=FILE"]
    files, notes = {}, []
    for task, kinds in tasks.items():
        recorded = kinds.get("validation") if isinstance(kinds, dict) else None
        if not recorded:
            continue
        problem = _recorded_file_problem(str(recorded), fingerprints.get(str(recorded)))
        if problem is None:
            files[str(task)] = Path(str(recorded))
        else:
            notes.append(f"the validation file of task {task} that the checkpoint records {problem} ({recorded}), "
                         f"so it is not used and int8 is not checked on it; give labelled data with "
                         f"--validation-data {task}=FILE")
    return files, text_field, label_field, notes


def _recorded_file_problem(path: str, fingerprint) -> str | None:
    """Why a recorded file may not be used, or None when it holds what it held at training. Checked cheaply
    first (there, a regular file, the recorded size), so a device, a FIFO or a file of another size is never
    read, and a file of the recorded size is read no further than that."""
    try:
        recorded = FileDigest.from_dict(fingerprint, "") if isinstance(fingerprint, dict) else None
    except (ValueError, TypeError, KeyError):
        recorded = None
    try:
        info = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return "is gone"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if recorded is None:
        return "has no fingerprint (size and sha256) recorded at training"
    if info.st_size != recorded.size or _regular_file_digest(Path(path), recorded.size) != recorded:
        return "has changed since training (its size or sha256 is not the one recorded)"
    return None


def _regular_file_digest(path: Path, limit: int | None = None) -> FileDigest | None:
    """The size and sha256 of a regular file, read in blocks, and past `limit` bytes no further than one byte
    (enough to know it is longer); None for anything else, which is never read (a FIFO would wait for a
    writer, a device never ends) or where it cannot be read."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # no wait, were it swapped for a FIFO
    except (OSError, ValueError):
        return None
    with os.fdopen(handle, "rb") as reader:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        return stream_digest(reader, limit)
