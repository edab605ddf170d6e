"""Errors a user can cause and fix. The CLI turns each into one line and exit code 1; anything else is a bug."""


class UserError(Exception):
    """Base class: the message alone tells the user what is wrong and what would be valid."""


class ConfigError(UserError, ValueError):
    """A configuration value or command-line choice is invalid."""


class DataError(UserError, ValueError):
    """A data file cannot be used; the message names the file and, where there is one, the line."""


class TrainingDivergedError(UserError, ArithmeticError):
    """The training loss became NaN or infinite; the message says at which step and what usually causes it."""


class BrokenModelError(UserError, ValueError):
    """A model computes NaN or infinite outputs (a run whose loss went NaN, weights damaged on disk)."""


class OutputError(UserError, OSError):
    """An output cannot be written: a closed pipe, a full disk, a folder that is read-only or not a folder."""


class BackboneNotFoundError(UserError, OSError):
    """The encoder id or path could not be loaded (not a folder, not in the local Hugging Face cache)."""


class CheckpointError(UserError, OSError):
    """A folder is not a complete mtl-onnx checkpoint."""


class ExportError(UserError):
    """An export cannot start or cannot finish (bad options, an output folder that is not ours, ...)."""


class ExportValidationError(ExportError):
    """An exported graph does not reproduce PyTorch (or a quantised variant loses too much accuracy); the message
    lists every mismatch found, not only the first."""


class ManifestError(UserError, ValueError):
    """An export folder's manifest is missing, unreadable, of another format version, or names a missing file."""


class RuntimeLoadError(UserError, OSError):
    """An exported graph or tokenizer cannot be loaded (corrupt or truncated file, wrong inputs/outputs)."""


class DeviceUnavailableError(RuntimeLoadError):
    """The requested device (CUDA) is not available to ONNX Runtime on this machine."""


class MissingDependencyError(UserError, ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


class BenchError(UserError):
    """A benchmark cannot run as asked (a backend without its model folder, a worker that failed)."""


class TritonConfigError(ExportError):
    """A Triton model repository's config.pbtxt does not parse as Triton's ModelConfig, or does not match its ONNX
    graph or label files; the message lists every problem found."""
