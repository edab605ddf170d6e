"""Where a training run writes, settled before any heavy work: the output folder (a symbolic link is followed, so the
model lands in the folder it names and the link stays, as `mtl.artifacts.publish` treats a report path that is a
link), the run folder beside it that holds the Trainer's checkpoints, and which checkpoint `--resume` continues
from (the newest complete one: a save cut short by a full disk or a kill is skipped). No torch."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mtl.artifacts.checkpoint import CHECKPOINTS_DIR, is_checkpoint
from mtl.artifacts.jsonfile import read_json
from mtl.artifacts.publish import PARTIAL_SUFFIX, RETIRED_SUFFIX, WRITE_ERRNOS, check_target, check_writable
from mtl.errors import ConfigError, OutputError

TRAINER_STATE_FILE = "trainer_state.json"  # the Trainer writes it last: a checkpoint with it is complete
# Its log history grows with every logged step: a long run's is megabytes, so it gets a bound of its own.
TRAINER_STATE_MAX_BYTES = 256 * 1024 * 1024
# What a complete checkpoint holds besides it (the Trainer's model, optimizer, schedule and random state).
CHECKPOINT_STATE_FILES = ("model.safetensors", "optimizer.pt", "scheduler.pt")


def settle_output(output: Path) -> Path:
    """The folder the model will be published as, absolute and with links followed; one error if it cannot be:
    a name with a NUL, the current folder or one above it (publishing renames a folder into place, which cannot
    be done to the folder the user is in), a name the file system refuses."""
    text = os.fspath(output)
    if "\0" in text:
        raise OutputError(f"--output {text!r}: a path cannot hold a NUL character")
    if not text.strip():
        raise OutputError("--output is empty; name a folder for the model, e.g. runs/model")
    named = Path(os.path.abspath(output))
    _check_name(named)
    check_writable(named)  # a link to nothing is refused, as for every output
    settled = Path(os.path.realpath(named))
    here = Path.cwd().resolve()
    if settled == here or settled in here.parents:
        raise OutputError(f"--output {text}: is the current folder or one above it; the model is published by "
                          f"renaming a new folder into place, so name a folder inside it instead (e.g. {text}/model)")
    if settled != named:
        _check_name(settled)
        check_writable(settled)
    return settled


def _check_name(output: Path) -> None:
    """The output's name, and the longest name a run makes beside it (".NAME.xxxxxxxx.retired" when it publishes),
    must fit this file system: refused now, not after training. Where the folder it goes in exists, such a folder
    is made and removed, which also catches names the file system refuses for other reasons."""
    existing = output.parent
    while not _is_folder(existing):
        existing = existing.parent
    limit = os.pathconf(existing, "PC_NAME_MAX")
    staging_name = len(os.fsencode(f".{output.name}.")) + 8 + len(RETIRED_SUFFIX)
    longest = max(len(os.fsencode(part)) for part in output.relative_to(existing).parts)
    if max(staging_name, longest) > limit:
        raise OutputError(f"--output {output}: the name is too long for this file system (at most {limit} bytes a "
                          f"name, and mtl-onnx needs {staging_name - len(os.fsencode(output.name))} more for the "
                          f"folders it stages the model in)")
    if existing == output.parent:
        try:
            os.rmdir(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=RETIRED_SUFFIX, dir=existing))
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return  # not about the name: check_writable names the folder that cannot be written
            raise OutputError(f"--output {output}: this file system refuses the name ({err.strerror})") from None


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long to look up: certainly not there
        return False


def check_output_dir(output: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to replace a folder that is not one of this tool's models, or a model without --overwrite; check
    the folder can be written. Nothing is deleted here: an old model is replaced only when the new one is done."""
    if resume:
        check_writable(output)
        return
    check_target(output, "model", is_checkpoint, overwrite, ConfigError,
                 "pass --overwrite to replace it or --resume to continue")


def run_folder(output: Path) -> Path:
    """Where a run builds its checkpoints and model before they are published as `output` (beside it, with a
    fixed name, so that --resume finds a killed run's checkpoints there)."""
    return output.parent / f".{output.name}{PARTIAL_SUFFIX}"


def is_complete(checkpoint: Path) -> bool:
    """Whether the Trainer finished saving this checkpoint: every state file there and its trainer state readable
    (written last, so a save cut short lacks it or has it torn)."""
    if not all((checkpoint / name).is_file() for name in CHECKPOINT_STATE_FILES):
        return False
    try:
        state = read_trainer_state(checkpoint)
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and isinstance(state.get("global_step"), int)


def read_trainer_state(checkpoint: Path):
    return read_json(checkpoint / TRAINER_STATE_FILE, max_bytes=TRAINER_STATE_MAX_BYTES)


def checkpoints(folder: Path) -> list[Path]:
    """The Trainer's checkpoint-N folders in `folder`, oldest step first."""
    steps = [(int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and p.is_dir()]
    return [path for _, path in sorted(steps)]


def resume_point(output: Path) -> Path:
    """The newest complete Trainer checkpoint to resume from: a killed run's, else the finished model's."""
    for folder in (run_folder(output) / CHECKPOINTS_DIR, output / CHECKPOINTS_DIR):
        complete = [path for path in checkpoints(folder) if is_complete(path)]
        if complete:
            return complete[-1]
    raise ConfigError(f"{output}: nothing to resume (no complete {CHECKPOINTS_DIR}/checkpoint-* folder from an "
                      f"earlier run)")


def drop_incomplete(folder: Path) -> None:
    """Remove the checkpoints of `folder` that a save cut short left (the Trainer would count them among those
    `save_total_limit` keeps, and one of them could be taken for the newest)."""
    for path in checkpoints(folder):
        if not is_complete(path):
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def saving(folder: Path, partial_ok: bool = False) -> Iterator[None]:
    """A save into `folder` that a full disk (or quota, or read-only file system) stops becomes one `OutputError`,
    and, unless `partial_ok`, the half-written `folder` is removed: it must never be taken for a checkpoint."""
    try:
        yield
    except BaseException as err:
        code = _write_errno(err)
        if not partial_ok:
            shutil.rmtree(folder, ignore_errors=True)
        if code is None:
            raise
        raise OutputError(f"{folder}: cannot be written ({os.strerror(code)}); the run's complete checkpoints are "
                          f"kept: make room and train again with --resume") from None


def _write_errno(err: BaseException) -> int | None:
    """The errno of a failed write: an OSError's, or the one safetensors (Rust) quotes as "Os { code: 28, ..."."""
    if isinstance(err, OSError) and not isinstance(err, OutputError):
        return err.errno if err.errno in WRITE_ERRNOS else None
    if isinstance(err, OutputError):
        return None
    match = re.search(r"Os \{ code: (\d+)", str(err))
    return int(match.group(1)) if match and int(match.group(1)) in WRITE_ERRNOS else None
