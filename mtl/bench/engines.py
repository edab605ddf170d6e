"""What runs one backend inside a worker process: PyTorch eager on a checkpoint, ONNX Runtime on an export, or the
peer (`peers`: sentence-transformers' ONNX backend on the checkpoint).

Each runner hands out zero-argument callables to time (a fixed-shape call in one mode, or `TextPass`es over a
corpus) and predicts labels for the accuracy check. Heavy imports happen in the runner that needs them, so an ONNX
Runtime worker never imports torch.

Modes: "per-task" routes the way the project this one started from did (one encoder pass per task, then that task's
head); "fused" runs
every head on one encoder pass (PyTorch's all-heads forward, ORT's model.onnx); "split" runs ORT's encoder.onnx once
and then each heads/<task>.onnx. How each engine pads real text in each mode is `backends.TEXT_PADDINGS`.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtl.bench.backends import TORCH_DTYPES, Backend, offline_fused, text_paddings
from mtl.bench.records import EngineInfo
from mtl.bench.workloads import TextPass, padded_shapes
from mtl.data.batching import length_sorted_batches
from mtl.errors import BenchError, ConfigError, DeviceUnavailableError

Call = Callable[[], Any]


def import_engine(engine: str) -> None:
    """Import what a backend needs, so that a cold start can tell import time from load time."""
    if engine == "torch":
        import torch  # noqa: F401
        import transformers  # noqa: F401

        import mtl.model  # noqa: F401
    else:
        import onnxruntime  # noqa: F401

        import mtl.runtime.predictor  # noqa: F401


def open_runner(backend: Backend, checkpoint: str | None, onnx: str | None, threads: int):
    if backend.engine == "torch":
        return TorchRunner(Path(checkpoint), backend, threads)
    if backend.engine == "st":
        from mtl.bench.peers import PeerRunner

        return PeerRunner(Path(checkpoint), backend, threads)
    return OrtRunner(Path(onnx), backend, threads)


class TorchRunner:
    """Eager PyTorch: the checkpoint's MultitaskModel, as a user of the starting project would run it; real text for
    the accuracy check, the cold start and the dynamically padded pass goes through `mtl.model.TorchPredictor`, as
    `mtl-onnx predict` does. "int8" is PyTorch's dynamic quantisation of every Linear layer (CPU)."""

    def __init__(self, checkpoint: Path, backend: Backend, threads: int):
        import torch
        import transformers

        from mtl.artifacts.checkpoint import WEIGHTS_FILE
        from mtl.model import TorchPredictor, load_checkpoint

        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # allowed only before the first parallel region
            torch.set_num_interop_threads(1)
        if backend.device == "cuda" and not torch.cuda.is_available():
            raise DeviceUnavailableError(f"backend {backend.name} on cuda: this PyTorch build sees no CUDA device "
                                         f"(torch {torch.__version__}, CUDA {torch.version.cuda})")
        transformers.logging.set_verbosity_error()
        self.torch = torch
        dtype = getattr(torch, TORCH_DTYPES[backend.precision])
        model, tokenizer = load_checkpoint(checkpoint)  # checked, and never the folder's own code
        model = model.to(device=backend.device, dtype=dtype).eval()
        where = torch.cuda.get_device_name(0) if backend.device == "cuda" else "CPU"
        if backend.precision == "int8":
            model = quantize_linear_layers(model, torch)
            where += f", dynamic int8 Linear layers, {torch.backends.quantized.engine} kernels"
        self.model = _DeviceModel(model, backend.device, torch)
        self.predictor = TorchPredictor(self.model, tokenizer)
        self.config = model.model_config
        self.tasks = list(self.config.task_names)
        self.weights_bytes = (checkpoint / WEIGHTS_FILE).stat().st_size
        self.info = EngineInfo(f"PyTorch eager ({where})", {"torch": torch.__version__,
                                                              "transformers": transformers.__version__})

    def artifact_bytes(self, mode: str) -> int:
        return self.weights_bytes  # every mode runs the whole checkpoint

    def provider(self) -> str:
        return self.info.provider

    def _forward(self, batch, mode: str, task: str | None = None) -> list:
        """Logits on the CPU as float32; `task` routes one task alone. Per-task routing is the starting project's
        forward(task_name, ...) for every task: the whole encoder again for each."""
        return self.model.run(batch, [task] if task else self.tasks if mode == "per-task" else [None])

    def sweep_call(self, mode: str, feeds: dict[str, np.ndarray]) -> Call:
        batch = {name: self.torch.from_numpy(feeds[name]) for name in self.config.input_names}
        return lambda: self._forward(batch, mode)

    def text_calls(self, mode: str, texts: list[str], batch_size: int) -> list[TextPass]:
        return [self._dynamic_pass(texts, batch_size) if padding == "dynamic" else
                self._max_length_pass(mode, texts, batch_size) for padding in text_paddings("torch", mode)]

    def _max_length_pass(self, mode: str, texts: list[str], batch_size: int) -> TextPass:
        """What a naive user of the starting project did: batches in input order, each padded to the model's max
        length, and with per-task routing one pass over the corpus per task."""
        length = self.config.max_length
        chunks = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]

        def one_pass(task: str | None) -> None:
            for chunk in chunks:
                batch = self.predictor.tokenizer(chunk, padding="max_length", truncation=True, max_length=length,
                                                 return_tensors="pt")
                self._forward(batch, mode, task)

        def call() -> None:
            for task in self.tasks if mode == "per-task" else [None]:  # per-task: the corpus once per task
                one_pass(task)

        return TextPass(call, [[len(chunk), length] for chunk in chunks], "max_length")

    def _dynamic_pass(self, texts: list[str], batch_size: int) -> TextPass:
        """What a capable PyTorch user writes, and what ONNX Runtime's passes do: length-sorted batches, each padded
        to its longest row, every head on one encoder pass (`TorchPredictor.logits`)."""
        encoded = self.predictor.tokenizer(texts, truncation=True, max_length=self.config.max_length)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        shapes = padded_shapes(lengths, length_sorted_batches(lengths, batch_size))
        return TextPass(lambda: self.logits(texts, batch_size), shapes, "dynamic")

    def logits(self, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
        """Every task's logits with dynamic padding and length sorting: the accuracy check and cold start."""
        return self.predictor.logits(texts, None, batch_size)

    def close(self) -> None:
        """Nothing to drop early: the one model goes with the runner."""


def quantize_linear_layers(model, torch):
    """PyTorch's dynamic int8 quantisation of the encoder's Linear layers: int8 weights, activations quantised per
    call. The heads stay float, as in the ONNX int8 variant: like for like, and int8 heads cost most of the accuracy
    (measured on MiniLM with centroid heads: whole model 47 % / 39 % argmax agreement with fp32 on topic /
    sentiment, encoder only 89 % / 81 %). torch.ao.quantization is deprecated since torch 2.10 in favour of
    torchao, and still works."""
    quantize = getattr(torch.ao.quantization, "quantize_dynamic", None)
    if quantize is None:
        raise BenchError(f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic (dynamic int8)")
    with warnings.catch_warnings():  # its deprecation notices say nothing about this model
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        model.encoder = quantize(model.encoder, {torch.nn.Linear}, dtype=torch.qint8)
        return model


class _DeviceModel:
    """The model on the bench's device and dtype, seen from the CPU: inputs go to the device once per call, and
    logits come back as float32 CPU tensors (`.cpu()` also waits for CUDA to finish). It is also the model that
    TorchPredictor drives (`eval`, `model_config`, `logits_by_task`), so real text takes the predictor's path."""

    def __init__(self, model, device: str, torch):
        self.model, self.device, self.torch = model, device, torch
        self.model_config = model.model_config

    def eval(self) -> _DeviceModel:
        return self  # loaded in eval mode

    def run(self, batch, routes: list[str | None]) -> list:
        """Logits of one forward per route: a task's head alone, or (None) every head on one encoder pass."""
        inputs = {name: batch[name].to(self.device) for name in self.model_config.input_names}
        with self.torch.inference_mode():
            logits = [value for task in routes for value in self.model(**inputs, task=task)["logits"]]
            return [value.float().cpu() for value in logits]

    def logits_by_task(self, **batch) -> dict:
        return dict(zip(self.model_config.task_names, self.run(batch, [None])))


class OrtRunner:
    """ONNX Runtime through mtl.runtime's Predictor, as users run it: its sessions (explicit threads, IO binding on
    CUDA) for fixed shapes, its tokenisation, dynamic padding and length sorting for real text. One Predictor at
    a time, so that one copy of the graphs is in memory and peak RSS is a mode's own."""

    def __init__(self, folder: Path, backend: Backend, threads: int):
        import onnxruntime
        import tokenizers

        from mtl.artifacts.manifest import load_manifest
        from mtl.runtime.session import CPU_PROVIDER, CUDA_PROVIDER

        self.folder, self.backend, self.threads = folder, backend, threads
        self.manifest = load_manifest(folder)
        if backend.variant not in self.manifest.variants:
            raise ConfigError(f"backend {backend.name}: {folder} has no {backend.variant} variant")
        self.files = self.manifest.variants[backend.variant].files
        self.tasks = list(self.manifest.task_names)
        self.predictor = None  # the mode's Predictor, loaded by the first call that needs it
        # What was asked for; each row records what its sessions report (`provider`).
        provider = CUDA_PROVIDER if backend.device == "cuda" else CPU_PROVIDER
        self.info = EngineInfo(provider, {"onnxruntime": onnxruntime.__version__, "tokenizers": tokenizers.__version__},
                               offline_fused(self.manifest))

    def artifact_bytes(self, mode: str) -> int:
        files = [self.files.model] if mode == "fused" else [self.files.encoder, *self.files.heads.values()]
        return sum((self.folder / f).stat().st_size for f in files)

    def provider(self) -> str:
        """The provider each session of the current Predictor actually runs on (the first of its list; ORT adds
        the CPU provider behind CUDA for the nodes CUDA lacks), e.g. "CUDAExecutionProvider"."""
        if self.predictor is None:
            return self.info.provider
        return ", ".join(dict.fromkeys(names[0] for names in self.predictor.providers().values()))

    def _predictor(self, execution: str):
        """The Predictor of `execution`, loaded in place of the one held before."""
        from mtl.runtime import Predictor

        if self.predictor is None or self.predictor.execution != execution:
            self.predictor = None  # dropped before the next loads: never two copies of the graphs at once
            self.predictor = Predictor.load(
                self.folder, precision=self.backend.variant, device=self.backend.device, threads=self.threads,
                execution=execution, graph_optimization=self.backend.graph_optimization)
        return self.predictor

    def sweep_call(self, mode: str, feeds: dict[str, np.ndarray]) -> Call:
        from mtl.artifacts.io_spec import EMBEDDING, ENCODER_GRAPH, FUSED_GRAPH, logits_name
        from mtl.runtime.predictor import head_key

        predictor = self._predictor("fused" if mode == "fused" else "split")
        if mode == "fused":
            fused, outputs = predictor.session(FUSED_GRAPH), [logits_name(t) for t in self.tasks]
            return lambda: fused.run(feeds, outputs)
        encoder = predictor.session(ENCODER_GRAPH)
        heads = [(predictor.session(head_key(t)), [logits_name(t)]) for t in self.tasks]

        def split() -> list:
            embedding = encoder.run(feeds, [EMBEDDING])[0]  # (batch, hidden), once for every head
            return [session.run({EMBEDDING: embedding}, names)[0] for session, names in heads]

        def per_task() -> list:
            return [session.run({EMBEDDING: encoder.run(feeds, [EMBEDDING])[0]}, names)[0]
                    for session, names in heads]

        return split if mode == "split" else per_task

    def text_calls(self, mode: str, texts: list[str], batch_size: int) -> list[TextPass]:
        """The runtime as users call it: tokenisation, length-sorted batches padded to their longest row."""
        predictor = self._predictor("fused" if mode == "fused" else "split")
        if mode == "per-task":  # one call per task; split execution runs the encoder and only that task's head
            call = lambda: [predictor.logits(texts, [task], batch_size) for task in self.tasks]  # noqa: E731
        else:
            call = lambda: predictor.logits(texts, None, batch_size)  # noqa: E731
        lengths = [len(e.ids) for e in predictor.text_encoder.encode(texts)]
        return [TextPass(call, padded_shapes(lengths, length_sorted_batches(lengths, batch_size)), "dynamic")]

    def logits(self, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
        return self._predictor("fused").logits(texts, None, batch_size)

    def close(self) -> None:
        self.predictor = None
