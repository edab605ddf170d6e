"""Export folder -> a model repository for Triton Inference Server's ONNX Runtime backend. No torch.

    <target>/<model_name>/
        config.pbtxt            platform onnxruntime_onnx, implicit batch (max_batch_size > 0), dynamic batching
        1/model.onnx            the fused graph of the chosen precision (every task's logits from one encoder pass)
        <task>_labels.txt       one label a line, in class-id order: Triton's `label_filename` for that output

The config is built from the manifest (the export's I/O contract) as Triton's own `ModelConfig` protobuf message
and written in protobuf text format, so it is valid by construction. The written folder is then read back and
checked against the copied ONNX graph and the label files before it is renamed into place, so a repository is
either complete and consistent or not there. Writing and checking need the `triton` extra (tritonclient[grpc],
which brings the ModelConfig protobuf, and onnx).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mtl.artifacts.io_spec import TensorSpec, logits_name
from mtl.artifacts.manifest import PRECISION_CHOICES, Manifest, choose_precision, load_manifest
from mtl.artifacts.publish import check_target, claimed, new_staging, publish
from mtl.errors import ConfigError, ExportError, MissingDependencyError, TritonConfigError
from mtl.extras import install_command

log = logging.getLogger(__name__)

TRITON_EXTRA = install_command("triton")
CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"
VERSION = "1"
PLATFORM = "onnxruntime_onnx"
BACKEND = "onnxruntime"
KINDS = {"cpu": "KIND_CPU", "gpu": "KIND_GPU"}
DEVICE_ALIASES = {"cpu": "cpu", "gpu": "gpu", "cuda": "gpu"}
# io_spec dtypes -> Triton's DataType names; ONNX TensorProto element types -> the same names.
TRITON_TYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
ONNX_TYPES = {1: "TYPE_FP32", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64"}
# A request waits at most this long for others to batch with; ~1 ms is small next to a transformer's latency.
DEFAULT_QUEUE_DELAY_US = 1000
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class TritonSettings:
    model_name: str = "mtl"
    device: str = "cpu"  # "cpu" or "gpu" ("cuda" is read as "gpu")
    max_batch_size: int = 32
    instance_count: int = 1
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US

    def checked(self) -> TritonSettings:
        if not _MODEL_NAME.fullmatch(self.model_name) or self.model_name in (".", ".."):
            raise ConfigError(f"invalid Triton model name {self.model_name!r}: use letters, digits, '_', '-', '.'")
        if self.device not in DEVICE_ALIASES:
            raise ConfigError(f"unknown Triton device {self.device!r}; valid: cpu, gpu")
        # 0 would mean "no batching" to Triton, and then the batch axis would have to be in dims: not supported.
        for name in ("max_batch_size", "instance_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"Triton {name} must be at least 1, got {getattr(self, name)}")
        if self.max_queue_delay_us < 0:
            raise ConfigError(f"Triton max queue delay must be >= 0 microseconds, got {self.max_queue_delay_us}")
        return TritonSettings(self.model_name, DEVICE_ALIASES[self.device], self.max_batch_size,
                              self.instance_count, self.max_queue_delay_us)


def write_triton_repository(export_folder: Path, target: Path, model_name: str = "mtl", device: str = "cpu",
                            max_batch_size: int = 32, precision: str = "fp32", *, instance_count: int = 1,
                            max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, overwrite: bool = False) -> Path:
    """Write `<target>/<model_name>` from an export folder and return it. `precision` is a variant of the
    export, or "auto" (int8 on CPU, fp16 on GPU, where exported). The written folder is checked against its ONNX
    graph before it replaces anything; building and checking need the `triton` extra."""
    settings = TritonSettings(model_name, device, max_batch_size, instance_count, max_queue_delay_us).checked()
    export_folder, target = Path(export_folder), Path(target)
    manifest = load_manifest(export_folder)
    precision = _choose_precision(manifest, export_folder, precision, settings.device)
    text = config_text(manifest, settings, precision)  # a missing `triton` extra fails here, before any write
    _import_onnx()
    model_dir = check_triton_target(target, settings.model_name, overwrite)
    target.mkdir(parents=True, exist_ok=True)
    where = _staging_where(target)
    # Not `staged`, which builds in a folder with a temporary name: Triton, and so the check, wants the model's
    # folder named like its config. The model is built in `<root>/<model_name>`; the root goes in any case.
    with claimed(model_dir, where):  # another run writing this model is refused, not raced
        check_triton_target(target, settings.model_name, overwrite)  # what that run may have left meanwhile
        staging_root = new_staging(model_dir, where)
        try:
            staging = staging_root / settings.model_name
            staging.mkdir()
            _write_model_folder(staging, text, manifest, export_folder / manifest.variants[precision].files.model)
            validate_triton_model(staging)
            publish(staging, model_dir)  # an older model is retired into the root, removed below
        finally:
            shutil.rmtree(staging_root, ignore_errors=True)
    log.info("wrote Triton model %s (%s, %s) to %s", settings.model_name, precision, settings.device, model_dir)
    return model_dir


def check_triton_target(target: Path, model_name: str = "mtl", overwrite: bool = False) -> Path:
    """`<target>/<model_name>`, if a Triton model may be written there (see `check_target`); the CLI calls this
    before the export, so a foreign folder costs no waiting."""
    model_dir = Path(target) / model_name
    check_target(model_dir, "Triton model", _is_triton_model, overwrite, ExportError)
    return model_dir


def check_triton_precision(precision: str, exported: tuple[str, ...]) -> None:
    """Before an export that a Triton repository follows: the variant Triton is to serve must be one that this
    export makes ("auto" always is: it falls back to fp32)."""
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"unknown --triton-precision {precision!r}; valid: {', '.join(PRECISION_CHOICES)}")
    if precision != "auto" and precision not in exported:
        raise ConfigError(f"--triton-precision {precision} is not among the exported precisions "
                          f"({', '.join(exported)}); add it to --precision or use --triton-precision auto")


def _choose_precision(manifest: Manifest, folder: Path, precision: str, device: str) -> str:
    if precision not in PRECISION_CHOICES:
        raise ConfigError(f"unknown precision {precision!r}; valid: {', '.join(PRECISION_CHOICES)}")
    return choose_precision(manifest, folder, precision, "cuda" if device == "gpu" else "cpu")


def model_config(manifest: Manifest, settings: TritonSettings):
    """Triton's ModelConfig for the fused graph: the manifest's inputs and outputs less their batch axis."""
    pb2 = triton_config_module()
    config = pb2.ModelConfig(name=settings.model_name, platform=PLATFORM, backend=BACKEND,
                             max_batch_size=settings.max_batch_size, default_model_filename=MODEL_FILE)
    for tensor in manifest.fused.inputs:
        config.input.add(**_tensor_fields(tensor, pb2))
    for tensor in manifest.fused.outputs:
        config.output.add(**_tensor_fields(tensor, pb2), label_filename=_label_file(_task_of(manifest, tensor.name)))
    # Present even with a zero delay: its presence is what turns dynamic batching on.
    config.dynamic_batching.SetInParent()
    config.dynamic_batching.max_queue_delay_microseconds = settings.max_queue_delay_us
    config.instance_group.add(kind=pb2.ModelInstanceGroup.Kind.Value(KINDS[settings.device]),
                              count=settings.instance_count)
    return config


def config_text(manifest: Manifest, settings: TritonSettings, precision: str = "fp32") -> str:
    """config.pbtxt: `model_config` in protobuf text format, under a comment for whoever opens the file."""
    from google.protobuf import text_format  # protobuf comes with tritonclient, the `triton` extra

    config = model_config(manifest, settings)
    header = (f"# Written by mtl-onnx from an export folder ({precision} fused graph). Dynamic batching merges only\n"
              "# requests of the same sequence length: pad on the client to a fixed length to batch them all.\n")
    return header + _session_config_note(manifest, precision) + text_format.MessageToString(config, as_utf8=True)


def _session_config_note(manifest: Manifest, precision: str) -> str:
    """The variant's ONNX Runtime session config, which this config cannot carry: Triton's ONNX Runtime backend
    reads a fixed set of `parameters` (threads, execution mode, memory arena, ...) and passes no other session
    config entry to ONNX Runtime, so Triton runs the graph with ORT's default fusions. Said in the file, for whoever
    deploys it."""
    entries = manifest.variants[precision].session_config
    if not entries:
        return ""
    log.info("Triton's ONNX Runtime backend cannot apply the %s variant's session config %s", precision, entries)
    listed = "".join(f"#   {key}={value}\n" for key, value in entries.items())
    return ("# mtl-onnx runs this graph with this ONNX Runtime session config, which Triton's ONNX Runtime backend\n"
            "# cannot be given (it reads only its own parameters):\n" + listed +
            "# Triton runs the graph with ORT's default fusions: the same outputs, but slower (measured on MiniLM\n"
            "# int8 with SkipLayerNormFusion on: 8 % at batch 1 x 32, about 20 % at 8 x 64).\n")


def _tensor_fields(tensor: TensorSpec, pb2) -> dict:
    if tensor.dtype not in TRITON_TYPES:
        raise ExportError(f"tensor {tensor.name!r} has dtype {tensor.dtype}, which has no Triton type here")
    # The first axis is the batch: with max_batch_size > 0 Triton adds it itself. Named axes are dynamic (-1).
    dims = [d if isinstance(d, int) else -1 for d in tensor.shape[1:]]
    return {"name": tensor.name, "data_type": pb2.DataType.Value(TRITON_TYPES[tensor.dtype]), "dims": dims}


def _task_of(manifest: Manifest, output_name: str) -> str:
    for task in manifest.task_names:
        if logits_name(task) == output_name:
            return task
    raise ExportError(f"fused graph output {output_name!r} belongs to no task of the manifest")


def _label_file(task: str) -> str:
    return f"{task}_labels.txt"


def _is_triton_model(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file()


def _staging_where(target: Path) -> Path:
    """Beside the repository when that is writable and on the same file system (the final rename must stay
    atomic), so that Triton, which polls the repository's folders, never meets a half-written model; else inside
    it, as for a repository that is a mount point such as a container volume."""
    parent = target.resolve().parent
    if os.access(parent, os.W_OK) and parent.stat().st_dev == target.stat().st_dev:
        return parent
    return target


def _write_model_folder(folder: Path, config: str, manifest: Manifest, model: Path) -> None:
    (folder / CONFIG_FILE).write_text(config, encoding="utf-8")
    for spec in manifest.model.tasks:
        # One label a line: labels hold no line break (TaskSpec refuses control characters when it loads).
        (folder / _label_file(spec.name)).write_text("\n".join(spec.labels) + "\n", encoding="utf-8")
    version = folder / VERSION
    version.mkdir()
    shutil.copyfile(model, version / MODEL_FILE)
    for name in _external_data_files(model):  # graphs over 2 GB keep their weights beside the .onnx file
        shutil.copyfile(model.parent / name, version / name)


def _external_data_files(model: Path) -> list[str]:
    onnx = _import_onnx()
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph = onnx.load(str(model), load_external_data=False).graph
    return sorted({ExternalDataInfo(t).location for t in graph.initializer if uses_external_data(t)})


# --- validation --------------------------------------------------------------------------------------------------


def triton_config_module():
    """Triton's generated ModelConfig protobuf module, from tritonclient (the `triton` extra)."""
    try:
        from tritonclient.grpc import model_config_pb2 as module
    except ImportError:
        raise MissingDependencyError(f"writing or checking a Triton model config needs tritonclient[grpc]; "
                                     f"install it with: {TRITON_EXTRA}") from None
    return module


def _import_onnx():
    try:
        import onnx
    except ImportError:
        raise MissingDependencyError(f"reading the ONNX graph needs onnx; install it with: {TRITON_EXTRA}") from None
    return onnx


def load_triton_config(model_dir: Path):
    """`<model_dir>/config.pbtxt` parsed into Triton's ModelConfig; a file that does not parse is one error."""
    from google.protobuf import text_format

    pb2 = triton_config_module()
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise TritonConfigError(f"{model_dir}: no {CONFIG_FILE}")
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), pb2.ModelConfig())
    except (text_format.ParseError, UnicodeDecodeError) as err:
        raise TritonConfigError(f"{path}: not a valid Triton model config ({str(err).splitlines()[0]})") from None


def validate_triton_model(model_dir: Path) -> None:
    """Check a Triton model folder as the ONNX Runtime backend would load it: the config parses into Triton's
    ModelConfig, names the folder, and every version's model.onnx has exactly the config's inputs, and its
    outputs, with the same element types and shapes (batch axis added); label files have one line per class.
    Every problem found is listed in one TritonConfigError."""
    model_dir = Path(model_dir)
    config = load_triton_config(model_dir)
    pb2 = triton_config_module()
    problems = _header_problems(config, model_dir, pb2)
    versions = sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0")
    if not versions:
        problems.append("no numbered version folder (such as 1/) with the model")
    for version in versions:
        problems += [f"version {version.name}: {p}" for p in _graph_problems(config, version, pb2)]
    problems += _label_problems(config, model_dir)
    if problems:
        raise TritonConfigError(f"{model_dir / CONFIG_FILE}: {len(problems)} problem(s): " + "; ".join(problems))


def _header_problems(config, model_dir: Path, pb2) -> list[str]:
    problems = []
    if config.name and config.name != model_dir.name:
        problems.append(f"name {config.name!r} is not the folder's name {model_dir.name!r}")
    # One of the two must name the ONNX Runtime backend, and Triton refuses a config whose two disagree.
    wrong = config.platform not in ("", PLATFORM) or config.backend not in ("", BACKEND)
    if wrong or not (config.platform or config.backend):
        problems.append(f"platform {config.platform!r} / backend {config.backend!r}: expected platform "
                        f"{PLATFORM!r} and/or backend {BACKEND!r}")
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size {config.max_batch_size} is negative")
    if config.HasField("dynamic_batching") and config.max_batch_size == 0:
        problems.append("dynamic_batching needs max_batch_size > 0")
    for group in config.instance_group:
        kind = pb2.ModelInstanceGroup.Kind.Name(group.kind)
        if kind not in ("KIND_AUTO", "KIND_CPU", "KIND_GPU"):
            problems.append(f"instance_group kind {kind} cannot run the ONNX Runtime backend")
        if group.count < 0:
            problems.append(f"instance_group count {group.count} is negative")
    return problems


def _graph_problems(config, version: Path, pb2) -> list[str]:
    path = version / (config.default_model_filename or MODEL_FILE)
    if not path.is_file():
        return [f"no {path.name}"]
    onnx = _import_onnx()
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as err:  # a truncated or foreign file: onnx raises DecodeError and others
        return [f"{path.name} cannot be read as ONNX ({type(err).__name__})"]
    initializers = {t.name for t in graph.initializer}
    inputs = {v.name: v for v in graph.input if v.name not in initializers}
    outputs = {v.name: v for v in graph.output}
    batched = config.max_batch_size > 0
    problems = _tensor_problems("input", config.input, inputs, batched, pb2)
    problems += _tensor_problems("output", config.output, outputs, batched, pb2)
    declared = {t.name for t in config.input}
    problems += [f"graph input {name!r} is not in the config" for name in inputs if name not in declared]
    return problems


def _tensor_problems(kind: str, tensors, graph_values: dict, batched: bool, pb2) -> list[str]:
    problems, seen = [], set()
    for tensor in tensors:
        if tensor.name in seen:
            problems.append(f"{kind} {tensor.name!r} is declared twice")
        seen.add(tensor.name)
        value = graph_values.get(tensor.name)
        if value is None:
            problems.append(f"{kind} {tensor.name!r} is not in the graph (graph {kind}s: {', '.join(graph_values)})")
            continue
        declared = pb2.DataType.Name(tensor.data_type)
        actual = ONNX_TYPES.get(value.type.tensor_type.elem_type, f"ONNX type {value.type.tensor_type.elem_type}")
        if declared != actual:
            problems.append(f"{kind} {tensor.name!r} is {declared} in the config, {actual} in the graph")
        problems += _shape_problems(kind, tensor, _onnx_dims(value), batched)
    return problems


def _onnx_dims(value) -> list[int]:
    """The graph's shape with every named or unknown axis as -1."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def _shape_problems(kind: str, tensor, graph_dims: list[int], batched: bool) -> list[str]:
    dims = list(tensor.reshape.shape) if tensor.HasField("reshape") else list(tensor.dims)
    expected = ([-1] if batched else []) + dims
    if len(graph_dims) != len(expected):
        return [f"{kind} {tensor.name!r} has rank {len(graph_dims)} in the graph, but the config's dims "
                f"{list(tensor.dims)} make {len(expected)}" + (" with the batch axis" if batched else "")]
    if batched and graph_dims[0] != -1:
        return [f"{kind} {tensor.name!r}: the graph fixes the batch axis to {graph_dims[0]}"]
    # A dynamic graph axis takes any configured size; a fixed one must be configured as exactly that size.
    bad = [i for i, (g, c) in enumerate(zip(graph_dims, expected, strict=True)) if g != -1 and g != c]
    if bad:
        return [f"{kind} {tensor.name!r} has dims {dims} in the config, but the graph's shape is {graph_dims}"]
    return []


def _label_problems(config, model_dir: Path) -> list[str]:
    problems = []
    for tensor in config.output:
        if not tensor.label_filename:
            continue
        path = model_dir / tensor.label_filename
        if not path.is_file():
            problems.append(f"output {tensor.name!r}: label file {tensor.label_filename} is missing")
            continue
        try:
            labels = path.read_text(encoding="utf-8").removesuffix("\n").split("\n")
        except UnicodeDecodeError:
            problems.append(f"output {tensor.name!r}: label file {tensor.label_filename} is not UTF-8")
            continue
        classes = tensor.dims[-1] if tensor.dims else 0
        if len(labels) != classes:
            problems.append(f"output {tensor.name!r}: {tensor.label_filename} has {len(labels)} label(s) for "
                            f"{classes} class(es)")
    return problems
