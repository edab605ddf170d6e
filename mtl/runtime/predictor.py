"""Predictor over an export folder: tokenizers + onnxruntime + numpy, no torch, no transformers."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
from tokenizers import Encoding

from mtl.artifacts.environment import usable_cores
from mtl.artifacts.io_spec import EMBEDDING, ENCODER_GRAPH, FUSED_GRAPH, HEAD_GRAPH, GraphSpec, logits_name
from mtl.artifacts.manifest import Manifest, check_choices, choose_precision, encoder_limits, load_manifest
from mtl.artifacts.records import prediction_records
from mtl.config import ModelConfig, Range
from mtl.data.batching import check_batch_size, length_sorted_batches
from mtl.errors import ConfigError, DeviceUnavailableError
from mtl.runtime.files import PinnedFile, pin
from mtl.runtime.session import GraphSession, cpu_fallback_warning, graph_optimization_level, resolve_device
from mtl.runtime.tokenizer import MAX_TOKENIZER_BYTES, TextEncoder

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
THREADS = Range(1, 4096, whole=True)  # None: every usable core


class Predictor:
    """Each task's label, score and probabilities for a list of texts, or their sentence embeddings.

    `execution="fused"` runs model.onnx (every head on one encoder pass); `"split"` runs encoder.onnx once and
    then only the requested heads. `graph_optimization` ("basic", "extended" or "all") is ONNX Runtime's graph
    optimisation level for every session; each session also gets the ORT session config entries the manifest
    records for the variant (the int8 graph's disabled fusion, say). Safe to share between threads: sessions are
    opened once (under a lock) and `run` is concurrent; nothing mutable is touched per call.

    Everything is checked at load (`load_manifest`, `TextEncoder.from_bytes`, `PinnedFile`): every graph file of
    the variant is opened and its size checked then, and the sessions this execution needs are built from the
    files once their sha256 matched. A session opened later (the encoder for `embed` of a fused predictor) is built
    from the file opened at load, checked the same way, so one Predictor runs one export even if the folder is
    republished meanwhile.
    """

    def __init__(self, folder: Path, manifest: Manifest, precision: str, device: str, threads: int,
                 execution: str, batch_size: int, graph_optimization: str = "all"):
        self.folder = Path(folder)
        self.manifest = manifest
        self.precision = precision
        self.device = device
        self.threads = threads
        self.execution = execution
        self.batch_size = batch_size
        self.graph_optimization = graph_optimization
        self.files = manifest.variants[precision].files
        self.session_config = manifest.variants[precision].session_config
        vocab_size, _ = encoder_limits(self.folder, manifest)
        with pin(self.folder, manifest, manifest.tokenizer, MAX_TOKENIZER_BYTES) as file:
            self.text_encoder = TextEncoder.from_bytes(file.read(), file.path, manifest.model.max_length,
                                                       manifest.pad_token_id, vocab_size)
        self._sessions: dict[str, GraphSession] = {}
        self._lock = threading.Lock()
        keys = [ENCODER_GRAPH, FUSED_GRAPH, *map(head_key, manifest.task_names)]
        self._pinned: dict[str, PinnedFile] = {}
        try:
            for key in keys:
                self._pinned[key] = pin(self.folder, manifest, self._graph(key)[0])
            # Open what this execution mode needs now, so that a bad file fails at load, not at the first call.
            for key in [FUSED_GRAPH] if execution == "fused" else [ENCODER_GRAPH, *keys[2:]]:
                self.session(key)
        except BaseException:
            self.close()
            raise

    @classmethod
    def load(cls, folder: Path, precision: str = "auto", device: str = "cpu", threads: int | None = None,
             execution: str = "fused", batch_size: int = DEFAULT_BATCH_SIZE, fallback_cpu: bool = False,
             graph_optimization: str = "all") -> Predictor:
        """Every argument is checked before the folder is read: a wrong type or value is a ConfigError naming it."""
        if isinstance(folder, bool) or not isinstance(folder, (str, os.PathLike)) or not str(folder):
            raise ConfigError(f"folder must be the path of an export folder (a str or Path), got {folder!r}")
        check_choices(precision, device, execution)
        graph_optimization_level(graph_optimization)  # a bad name fails before anything is read
        check_batch_size(batch_size)
        if threads is not None:
            THREADS.check("threads", threads)
        if not isinstance(fallback_cpu, bool):
            raise ConfigError(f"fallback_cpu must be True or False, got {fallback_cpu!r}")
        device = resolve_device(device, fallback_cpu)
        manifest = load_manifest(folder)
        args = (threads or usable_cores(), execution, batch_size, graph_optimization)
        try:
            return cls(Path(folder), manifest, choose_precision(manifest, Path(folder), precision, device), device,
                       *args)
        except DeviceUnavailableError:  # ONNX Runtime listed CUDA, but a session did not get it
            if device != "cuda" or not fallback_cpu:
                raise
        log.warning(cpu_fallback_warning())
        return cls(Path(folder), manifest, choose_precision(manifest, Path(folder), precision, "cpu"), "cpu", *args)

    def providers(self) -> dict[str, list[str]]:
        """{graph file: the execution providers its session actually runs on} for every session opened so far."""
        return {str(session.path.relative_to(self.folder)): session.providers for session in self._sessions.values()}

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.manifest.task_names

    @property
    def config(self) -> ModelConfig:
        """Tasks and labels in the form the PyTorch predictor has them (shared evaluation code reads this)."""
        return self.manifest.model

    def check_tasks(self, tasks: list[str] | None) -> list[str]:
        unknown = [t for t in tasks or [] if t not in self.tasks]
        if unknown:
            raise ConfigError(f"unknown task {unknown[0]!r}; valid: {', '.join(self.tasks)}")
        return list(dict.fromkeys(tasks)) if tasks else list(self.tasks)

    def predict(self, texts: list[str], tasks: list[str] | None = None, batch_size: int | None = None) -> list[dict]:
        """Per text, in input order: {task: {"label", "score", "probabilities": {label: p}}}."""
        logits = self.logits(texts, tasks, batch_size)
        return prediction_records(logits, {t: self.manifest.labels(t) for t in logits})

    def logits(self, texts: list[str], tasks: list[str] | None = None,
               batch_size: int | None = None) -> dict[str, np.ndarray]:
        """Each requested task's logits, (len(texts), n_labels), float32, in input order."""
        tasks = self.check_tasks(tasks)
        encodings = self.text_encoder.encode(texts)  # a bad text (or a bare string) fails here, naming its index
        out = {t: np.zeros((len(encodings), len(self.manifest.labels(t))), dtype=np.float32) for t in tasks}
        for rows, feeds in self._batches(encodings, batch_size):
            for task, values in self._batch_logits(feeds, tasks).items():
                out[task][rows] = values
        return out

    def embed(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """The pooled sentence embeddings, (len(texts), hidden), float32, in input order."""
        encodings = self.text_encoder.encode(texts)
        out = np.zeros((len(encodings), self.manifest.hidden_size), dtype=np.float32)
        encoder = self.session(ENCODER_GRAPH)
        for rows, feeds in self._batches(encodings, batch_size):
            out[rows] = encoder.run(feeds, [EMBEDDING])[0]
        return out

    def _batch_logits(self, feeds: dict[str, np.ndarray], tasks: list[str]) -> dict[str, np.ndarray]:
        if self.execution == "fused":
            values = self.session(FUSED_GRAPH).run(feeds, [logits_name(t) for t in tasks])
            return dict(zip(tasks, values))
        embedding = self.session(ENCODER_GRAPH).run(feeds, [EMBEDDING])[0]  # (batch, hidden)
        return {t: self.session(head_key(t)).run({EMBEDDING: embedding}, [logits_name(t)])[0] for t in tasks}

    def _batches(self, encodings: list[Encoding], batch_size: int | None):
        """(row indices, padded inputs) per batch: rows of similar length together, so padding stays small."""
        batch_size = self.batch_size if batch_size is None else batch_size
        names = list(self.manifest.model.input_names)
        for rows in length_sorted_batches([len(e.ids) for e in encodings], batch_size):
            yield np.asarray(rows), self.text_encoder.arrays([encodings[i] for i in rows], names)

    def session(self, key: str) -> GraphSession:
        """The session of the encoder (`ENCODER_GRAPH`), the fused model (`FUSED_GRAPH`) or a task's head
        (`head_key(task)`); opened on first use. For callers that feed fixed-shape arrays themselves (the bench)."""
        session = self._sessions.get(key)
        if session is not None:
            return session
        with self._lock:
            if key not in self._sessions:
                if key not in self._pinned:
                    raise ConfigError(f"unknown graph {key!r}; valid: {ENCODER_GRAPH}, {FUSED_GRAPH}, "
                                      f"{head_key('TASK')} for a task of {', '.join(self.tasks)}")
                path, spec = self._graph(key)
                self._sessions[key] = GraphSession(self.folder / path, spec, self.device, self.threads,
                                                   self.graph_optimization, self.session_config,
                                                   self._pinned[key].runtime_source())
                self._pinned.pop(key).close()  # ORT holds the graph now
            return self._sessions[key]

    def close(self) -> None:
        """Let go of the graph files opened at load and not yet read (garbage collection does it too)."""
        for pinned in self._pinned.values():
            pinned.close()
        self._pinned.clear()

    def _graph(self, key: str) -> tuple[str, GraphSpec]:
        if key == ENCODER_GRAPH:
            return self.files.encoder, self.manifest.encoder
        if key == FUSED_GRAPH:
            return self.files.model, self.manifest.fused
        task = key.split("/", 1)[-1]
        return self.files.heads[task], self.manifest.heads[task]


def head_key(task: str) -> str:
    return f"{HEAD_GRAPH}/{task}"  # task names cannot hold "/", so a task called "model" cannot collide

