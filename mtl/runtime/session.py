"""ONNX Runtime sessions: providers, explicit thread counts, load errors as one line, and IO binding on CUDA."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mtl.artifacts.environment import usable_cores
from mtl.artifacts.io_spec import EMBEDDING, GraphSpec
from mtl.artifacts.manifest import DEVICES
from mtl.errors import ConfigError, DeviceUnavailableError, RuntimeLoadError
from mtl.runtime.cuda import CUDA_PROVIDER, cuda_unavailable_reason, has_cuda_provider, load_cuda_libraries

log = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
# Where ORT looks for the weights a graph over 2 GB keeps beside it, when it loads the graph from bytes or from the
# open file (/proc/self/fd/N) rather than by its path in the export folder. ORT still refuses weights outside it.
EXTERNAL_DATA_FOLDER = "session.model_external_initializers_file_folder_path"
# ORT's graph rewrites at session creation: "basic" folds constants and drops redundant nodes (about the graph as
# exported), "extended" adds the transformer fusions (Attention, SkipLayerNormalization, BiasGelu, ...), "all" also
# changes memory layouts. "all" is the default and the fastest; the others show what the fusions buy (the bench's
# ort-fp32 runs "basic").
GRAPH_OPTIMIZATIONS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def resolve_device(device: str, fallback_cpu: bool = False) -> str:
    """'cpu' or 'cuda'; CUDA with an onnxruntime that has no CUDA provider is an error unless falling back is
    allowed. Whether the provider then starts is only known once a session exists (`GraphSession`)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise ConfigError(f"unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "cuda" and not has_cuda_provider():
        if not fallback_cpu:
            raise DeviceUnavailableError(cuda_error())
        log.warning(cpu_fallback_warning())
        return "cpu"
    return device


def cuda_error(detail: str = "") -> str:
    return (f"CUDA requested, but {cuda_unavailable_reason()}{detail}. To run on CPU: --device cpu (predict: or "
            f"--fallback-cpu)")


def cpu_fallback_warning() -> str:
    return f"{cuda_unavailable_reason()}: running on CPU (--fallback-cpu)"


def graph_optimization_level(name: str) -> ort.GraphOptimizationLevel:
    if not isinstance(name, str) or name not in GRAPH_OPTIMIZATIONS:
        raise ConfigError(f"unknown graph optimization {name!r}; valid: {', '.join(GRAPH_OPTIMIZATIONS)}")
    return GRAPH_OPTIMIZATIONS[name]


def session_options(threads: int, graph_optimization: str = "all",
                    config: dict[str, str] | None = None) -> ort.SessionOptions:
    """`config`: the session config entries the graph was built to run with (the manifest's, per variant)."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a whole number of at least 1, got {threads!r}")
    options = ort.SessionOptions()
    # Set explicitly: ORT's default spins one thread per core, which oversubscribes the CPU as soon as anything
    # else (PyTorch, a second session, the tokenizer) runs in the same process.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = graph_optimization_level(graph_optimization)
    options.log_severity_level = 3  # errors only; ORT's warnings would interleave with JSONL on the terminal
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    return options


class GraphSession:
    """One ONNX graph in one ORT session. `run` is safe to call from several threads at once: ORT sessions are,
    and each call builds its own feeds (and IO binding on CUDA). `session_config` holds the ORT session config
    entries the graph was built to run with (a manifest variant's `session_config`). `source`, where given, is what
    ORT loads instead of `path`, already checked against the manifest (`PinnedFile.runtime_source`): the graph's
    bytes, or the path of the file as opened at load; `path` then only names the graph in messages and tells ORT
    where weights kept beside it are."""

    def __init__(self, path: Path, spec: GraphSpec, device: str = "cpu", threads: int | None = None,
                 graph_optimization: str = "all", session_config: dict[str, str] | None = None,
                 source: str | bytes | None = None):
        self.path = Path(path)
        self.device = device
        self.ep_error = ""  # what ORT said when the CUDA provider failed to start, where it said anything
        providers = [(CUDA_PROVIDER, {"device_id": 0}), CPU_PROVIDER] if device == "cuda" else [CPU_PROVIDER]
        # A head is two small matmuls: one thread. A multi-thread pool per head would spin against the encoder's
        # pool between runs, which measured 3x slower split execution on 2 cores (docs/bench.md).
        threads = 1 if spec.input_names == [EMBEDDING] else threads or usable_cores()
        options = session_options(threads, graph_optimization, session_config)
        if source is None and not self.path.is_file():
            raise RuntimeLoadError(f"{self.path}: graph file is missing")
        if source is not None:  # a graph over 2 GB keeps its weights in files beside it: ORT looks for them there
            options.add_session_config_entry(EXTERNAL_DATA_FOLDER, str(self.path.parent))
        try:
            self.session = self._open(str(self.path) if source is None else source, options, providers)
        except Exception as err:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...) for bad files
            detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            if isinstance(source, str):  # ORT names what it opened (/proc/self/fd/N): name the graph's file instead
                detail = detail.replace(source, str(self.path))
            raise RuntimeLoadError(f"{self.path}: ONNX Runtime cannot load this graph ({detail})") from None
        if device == "cuda" and self.providers[0] != CUDA_PROVIDER:
            # ORT falls back to CPU without an error when the provider cannot start (onnxruntime#23372).
            said = f" after ONNX Runtime's {self.ep_error!r}" if self.ep_error else ""
            raise DeviceUnavailableError(cuda_error(f"; {self.path.name} got {', '.join(self.providers)}{said}"))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._check_io(spec)

    def _open(self, source: str | bytes, options: ort.SessionOptions, providers: list) -> ort.InferenceSession:
        if self.device != "cuda":
            return ort.InferenceSession(source, options, providers=providers)
        load_cuda_libraries()  # the CUDA libraries of the nvidia-* wheels are not on the loader's path
        # ORT's own log lines about a provider that did not start (three, from C++, in colour on stderr) would come
        # before the one line the providers check below gives, which names what is missing: fatal ones only.
        ort.set_default_logger_severity(4)
        # When the CUDA provider fails to start, ORT prints "EP Error ... Falling back" to stdout, where predict
        # writes its JSON lines, and runs on CPU: kept out of stdout, its reason goes into the providers check's error.
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            session = ort.InferenceSession(source, options, providers=providers)
        self.ep_error = next((line.strip()[:300] for line in printed.getvalue().splitlines()
                              if line.startswith("EP Error")), "")
        return session

    @property
    def providers(self) -> list[str]:
        """The execution providers this session actually runs on, in ORT's order of preference."""
        return self.session.get_providers()

    def _check_io(self, spec: GraphSpec) -> None:
        """The graph takes and gives what the manifest says, with the same fixed sizes (a head with 3 outputs
        where the manifest lists 4 labels would label every text wrongly without a word)."""
        declared = {o.name: o.shape for o in self.session.get_outputs()}
        if set(self.input_names) != set(spec.input_names) or not set(spec.output_names) <= set(declared):
            raise RuntimeLoadError(
                f"{self.path}: graph inputs {self.input_names} / outputs {sorted(declared)} do not match "
                f"the manifest ({spec.input_names} / {spec.output_names})"
            )
        for tensor in spec.outputs:
            shape = declared[tensor.name]
            fixed = [(got, want) for got, want in zip(shape, tensor.shape) if isinstance(got, int)
                     and isinstance(want, int) and got != want]
            if len(shape) != len(tensor.shape) or fixed:
                raise RuntimeLoadError(f"{self.path}: output {tensor.name} has shape {list(shape)}, but the manifest "
                                       f"says {list(tensor.shape)}")

    def run(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        # Feed what the session declares, not a fixed list: RoBERTa-family graphs take no token_type_ids.
        feeds = {name: feeds[name] for name in self.input_names}
        if self.device == "cuda":
            return self._run_bound(feeds, outputs)
        return self.session.run(outputs, feeds)

    def _run_bound(self, feeds: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        """CUDA: inputs copied to the device once, outputs left there until one copy back, with no per-op
        host round trips. A fresh binding per call keeps concurrent callers apart."""
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0))
        for name in outputs:
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
