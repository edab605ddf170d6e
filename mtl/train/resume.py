"""Checks on the Trainer checkpoint that `--resume` continues from, before the Trainer reads it: every file it
`torch.load`s is loaded here weights-only (plain tensors and containers, no pickled code: a tampered file cannot
run anything, and a damaged one is one line), its model weights must be exactly the model's, and the best
checkpoint its state names must be one of the run's own."""

from __future__ import annotations

from pathlib import Path

from mtl.config import TrainConfig
from mtl.errors import CheckpointError
from mtl.loading import describe, expected_state, tensor_specs, weight_problems
from mtl.train.folders import TRAINER_STATE_FILE, read_trainer_state

# What the Trainer torch.loads from a checkpoint on resume (rng_state_N.pth per process under DDP).
TORCH_STATE_PATTERNS = ("rng_state*.pth", "optimizer.pt", "scheduler.pt", "scaler.pt", "pytorch_model.bin")
WEIGHTS = "model.safetensors"
# Trainer state fields the Trainer computes with, and their JSON types.
STATE_FIELDS = {"global_step": int, "max_steps": int, "epoch": (int, float), "num_train_epochs": int,
                "logging_steps": int, "eval_steps": (int, float), "save_steps": (int, float), "train_batch_size": int,
                "best_metric": (int, float), "best_global_step": int, "best_model_checkpoint": str,
                "log_history": list, "stateful_callbacks": dict, "total_flos": (int, float)}


def check_resume_state(checkpoint: Path, model, loss, config: TrainConfig, run_checkpoints: Path) -> None:
    """One CheckpointError naming the file, if any state the Trainer would load from `checkpoint` is damaged, holds
    pickled code, or does not fit `model` trained with `loss` (whose learned task weights the Trainer's checkpoints
    keep) and the optimizer `config` gives it. `run_checkpoints` is where the resumed run keeps its checkpoints
    (the best checkpoint a state names may be there, or beside `checkpoint`)."""
    checkpoint = Path(checkpoint)
    groups = _optimizer_groups(model, loss, config)
    for pattern in TORCH_STATE_PATTERNS:
        for path in sorted(checkpoint.glob(pattern)):
            problems = _content_problems(path.name, _load_weights_only(path), groups)
            if problems:
                raise CheckpointError(f"{path}: not the state of the run being resumed: {describe(problems)}")
    expected = {**expected_state(model), **tensor_specs(loss.state_dict(), "loss.")}
    best = _best_checkpoint(checkpoint, run_checkpoints)
    for folder in dict.fromkeys(p for p in (checkpoint, best) if p is not None):
        problems = weight_problems(folder / WEIGHTS, expected)
        if problems:
            raise CheckpointError(f"{folder / WEIGHTS}: does not hold the model being resumed: {describe(problems)}")


def _optimizer_groups(model, loss, config: TrainConfig) -> list[list[tuple[int, ...]]]:
    """The shapes of each optimizer group's parameters, in order, as the Trainer will build them: the model's groups,
    then the loss's learned weights (registered last, so grouped last)."""
    from mtl.train.trainer import parameter_groups

    groups = [[tuple(p.shape) for p in group["params"]] for group in parameter_groups(model, config)]
    learned = [tuple(p.shape) for p in loss.parameters()]
    return groups + ([learned] if learned else [])


def _load_weights_only(path: Path):
    import torch
    from transformers.trainer import safe_globals  # the numpy types the Trainer's own random state needs

    try:
        with safe_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpickling raises anything; none of it may become a traceback
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointError(f"{path}: cannot be loaded as plain tensors ({first}); it is damaged or holds code, "
                              f"so --resume will not use it (remove {path.parent} to resume from an earlier "
                              f"checkpoint)") from None


def _trainer_state(checkpoint: Path) -> dict:
    """The checkpoint's trainer state, if the Trainer can take it: its fields, of the types it computes with."""
    from transformers import TrainerState

    path = checkpoint / TRAINER_STATE_FILE
    try:
        state = read_trainer_state(checkpoint)
        if not isinstance(state, dict):
            raise TypeError("not a JSON object")
        TrainerState(**state)  # unknown fields
        wrong = [name for name, kind in STATE_FIELDS.items() if state.get(name) is not None
                 and (not isinstance(state[name], kind) or isinstance(state[name], bool))]
        if wrong or not all(isinstance(entry, dict) for entry in state.get("log_history") or []):
            raise TypeError(f"wrong type of {', '.join(wrong or ['log_history'])}")
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: not a trainer state the run can continue from ({err})") from None
    return state


def _best_checkpoint(checkpoint: Path, run_checkpoints: Path) -> Path | None:
    """The best checkpoint the trainer state names (the Trainer reloads it at the end of the run); it must be a
    checkpoint of the same run, not a path anywhere on the machine."""
    state_file = checkpoint / TRAINER_STATE_FILE
    best = _trainer_state(checkpoint).get("best_model_checkpoint")
    if best is None:
        return None
    path = Path(str(best))
    if not path.is_dir():
        return None  # the Trainer skips a best checkpoint that is gone (save_total_limit removed it)
    if path.resolve().parent not in (checkpoint.resolve().parent, run_checkpoints.resolve()):
        raise CheckpointError(f"{state_file}: best_model_checkpoint {str(best)!r} is not a checkpoint of this run "
                              f"({checkpoint.parent})")
    return path


def _content_problems(name: str, state, groups: list[list[tuple[int, ...]]]) -> list[str]:
    """What the Trainer would fail on (or silently misuse) when it applies this loaded state."""
    if name.startswith("rng_state"):
        return _rng_problems(state)
    if name == "optimizer.pt":
        return _optimizer_problems(state, groups)
    if name == "scheduler.pt":
        return _scheduler_problems(state, len(groups))
    return []


def _rng_problems(state) -> list[str]:
    import random

    import numpy as np
    import torch

    try:  # applied to throwaway generators, exactly as the Trainer applies them to the global ones
        random.Random().setstate(state["python"])
        np.random.RandomState().set_state(state["numpy"])
        torch.Generator().set_state(state["cpu"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
        return [f"not a random number state ({(str(err).splitlines() or [type(err).__name__])[0][:200]})"]
    return []


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _optimizer_problems(state, groups: list[list[tuple[int, ...]]]) -> list[str]:
    import torch

    if not isinstance(state, dict) or not isinstance(state.get("param_groups"), list) \
            or not isinstance(state.get("state"), dict):
        return ["not an optimizer state (it needs param_groups and state)"]
    saved = state["param_groups"]
    if len(saved) != len(groups):
        return [f"{len(saved)} parameter groups, the model being resumed has {len(groups)}"]
    problems = []
    for number, (group, shapes) in enumerate(zip(saved, groups)):
        params = group.get("params") if isinstance(group, dict) else None
        if not isinstance(params, list) or len(params) != len(shapes):
            problems.append(f"parameter group {number} does not have the model's {len(shapes)} parameters")
            continue
        problems += [f"parameter group {number}: {key} is not a number" for key in ("lr", "weight_decay", "eps")
                     if key in group and not _number(group[key])]
        for index, shape in zip(params, shapes):
            entry = state["state"].get(index, {})
            moments = entry.items() if isinstance(entry, dict) else [("state", entry)]
            problems += [f"parameter {index}: {key} is not a tensor of shape {list(shape)}" for key, value in moments
                         if key != "step" and not (isinstance(value, torch.Tensor) and tuple(value.shape) == shape)]
    return problems


def _scheduler_problems(state, groups: int) -> list[str]:
    if not isinstance(state, dict):
        return ["not a learning-rate schedule state"]
    problems = [] if isinstance(state.get("last_epoch"), int) and not isinstance(state["last_epoch"], bool) else [
        "last_epoch is not a whole number"]
    for key in ("base_lrs", "_last_lr"):
        value = state.get(key)
        if value is not None and not (isinstance(value, list) and len(value) == groups and all(map(_number, value))):
            problems.append(f"{key} is not {groups} numbers, one per parameter group")
    return problems
