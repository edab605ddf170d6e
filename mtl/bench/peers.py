"""The peer: what a sentence-transformers user runs instead of this project's export. Its ONNX backend (Optimum's
exporter, then ONNX Runtime) at fp32, and its dynamic int8 export, on the same encoder weights as the checkpoint,
with the checkpoint's heads applied in numpy to its embeddings. Runs inside a bench worker, like `engines`.

sentence-transformers loads hub-style folders, so the runner assembles one in a temporary folder: the encoder's
config and weights (`encoder.backbone.*` without the prefix), the tokenizer, a plain Transformer module and a
Pooling module with the checkpoint's pooling. Loading it with backend="onnx" exports it; int8 then runs
`export_dynamic_quantized_onnx_model` with the preset that matches this CPU. Both happen while loading, never in a
timed call, so the worker's load time and peak RSS include them (and the peer gets no cold start).

Measured here (sentence-transformers 5.7, optimum-onnx 0.1, transformers 4.57, torch 2.13, onnxruntime 1.32): both
paths work offline, as the folder is local; Optimum exports with torch's TorchScript exporter (it passes
dynamo=False), and ORT's quantizer takes that graph as it is. sentence-transformers 6 needs transformers 5, and its
ONNX backend is still optimum-onnx, whose only release pins transformers<4.58 (and fails to import on transformers
5.25: `is_offline_mode` left `transformers.utils`): `sentence-transformers[onnx]>=6` cannot be installed (2026-12),
hence the `peer` extra's `<6` and its transformers 4.57 pin.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from mtl.artifacts.checkpoint import ENCODER_CONFIG_DIR, WEIGHTS_FILE, read_model_config
from mtl.artifacts.jsonfile import read_json, write_json
from mtl.bench.backends import Backend
from mtl.bench.records import EngineInfo
from mtl.bench.stats import EncoderDims
from mtl.bench.workloads import TextPass, padded_shapes
from mtl.errors import BenchError

ENCODER_PREFIX = "encoder.backbone."
# TaskHead is Sequential(Linear, ReLU, Dropout, Linear): its two Linear layers are entries 0 and 3.
HEAD_LAYERS = ("0", "3")

Heads = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # task: (w1, b1, w2, b2)


def quantization_preset(flags: list[str], architecture: str) -> str:
    """sentence-transformers' int8 preset for this CPU (ONNX Runtime's per-ISA quantisation settings)."""
    if architecture.lower() in ("aarch64", "arm64"):
        return "arm64"
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    return "avx512" if "avx512f" in flags else "avx2"


def head_weights(weights: dict[str, Any], tasks: list[str]) -> Heads:
    """Each task's two Linear layers as float32 numpy arrays, from the checkpoint's (torch) tensors."""
    def array(name: str) -> np.ndarray:
        return weights[name].float().numpy()

    return {task: tuple(array(f"heads.{task}.{layer}.{kind}") for layer in HEAD_LAYERS for kind in ("weight", "bias"))
            for task in tasks}


def head_logits(heads: Heads, embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Linear -> ReLU -> Linear per task on (batch, hidden) embeddings; dropout is off at inference."""
    return {task: np.maximum(embeddings @ w1.T + b1, 0.0) @ w2.T + b2 for task, (w1, b1, w2, b2) in heads.items()}


def write_peer_folder(checkpoint: Path, folder: Path) -> Heads:
    """A sentence-transformers folder of the checkpoint's encoder in `folder`; returns the heads' weights."""
    from safetensors.torch import load_file, save_file

    from mtl.model import load_tokenizer

    config = read_model_config(checkpoint)
    weights = load_file(str(checkpoint / WEIGHTS_FILE))
    encoder = {name[len(ENCODER_PREFIX):]: value for name, value in weights.items() if name.startswith(ENCODER_PREFIX)}
    save_file(encoder, str(folder / "model.safetensors"), metadata={"format": "pt"})
    encoder_config = read_json(checkpoint / ENCODER_CONFIG_DIR / "config.json")
    write_json(folder / "config.json", encoder_config)
    load_tokenizer(str(checkpoint)).save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    write_json(folder / "modules.json", modules)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": config.max_length, "do_lower_case": False})
    pooling = {"word_embedding_dimension": EncoderDims.from_config(encoder_config).hidden,  # DistilBERT's "dim"
               "pooling_mode": config.pooling}  # "cls" or "mean", names both libraries use
    (folder / "1_Pooling").mkdir()
    write_json(folder / "1_Pooling" / "config.json", pooling)
    return head_weights(weights, list(config.task_names))


class PeerRunner:
    """sentence-transformers' ONNX backend, driven as its users drive it: `encode` (its tokenizer, its
    length-sorted dynamic padding, one encoder pass) then every head in numpy. Its one mode is "fused"."""

    def __init__(self, checkpoint: Path, backend: Backend, threads: int):
        import torch

        from mtl.bench.environment import cpu_info
        from mtl.runtime.session import CPU_PROVIDER

        torch.set_num_threads(threads)  # its pooling and tokenizer output are torch tensors
        self.torch, self.threads = torch, threads
        self.workdir = tempfile.TemporaryDirectory(prefix="mtl-bench-peer-")
        self.folder = Path(self.workdir.name)
        self.heads = write_peer_folder(checkpoint, self.folder)
        self.tasks = list(self.heads)
        self.input_names = read_model_config(checkpoint).input_names
        cpu = cpu_info()
        preset = quantization_preset(cpu.flags, cpu.architecture) if backend.precision == "int8" else None
        self.model, self.onnx_file = self._export(preset)
        variant = f"; dynamic int8 export, {preset} preset" if preset else ""
        self.info = EngineInfo(f"sentence-transformers ONNX backend ({CPU_PROVIDER}{variant})", _versions(torch))

    def _open(self, file_name: str | None = None):
        from sentence_transformers import SentenceTransformer

        from mtl.runtime.session import CPU_PROVIDER, session_options

        kwargs = {"provider": CPU_PROVIDER, "session_options": session_options(self.threads)}
        if file_name:
            kwargs["file_name"] = file_name
        return SentenceTransformer(str(self.folder), backend="onnx", device="cpu", local_files_only=True,
                                   trust_remote_code=False, model_kwargs=kwargs)  # never the folder's own code

    def _export(self, preset: str | None):
        """(model, its ONNX file): the fp32 export, saved as sentence-transformers advises; with `preset`, its int8
        export of that, loaded in its place."""
        # A third party's export can fail in many ways (an architecture it lacks, a library version it does not
        # support): whatever it raises becomes this backend's one line, with its own first line as the reason.
        step = "ONNX export"
        try:
            with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notices are Optimum's
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", self.torch.jit.TracerWarning)
                model = self._open()
            model.save_pretrained(str(self.folder))
            if preset is None:
                return model, self.folder / "onnx" / "model.onnx"
            step = f"int8 export ({preset} preset)"
            from sentence_transformers.backend import export_dynamic_quantized_onnx_model

            suffix = f"qint8_{preset}"  # written to onnx/model_<suffix>.onnx, as its loader expects
            export_dynamic_quantized_onnx_model(model, preset, str(self.folder), file_suffix=suffix)
            name = f"onnx/model_{suffix}.onnx"
            del model
            return self._open(name), self.folder / name
        except Exception as err:  # see above
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise BenchError(f"sentence-transformers' {step} failed: {type(err).__name__}: {reason}") from None

    def artifact_bytes(self, mode: str) -> int:
        return self.onnx_file.stat().st_size

    def provider(self) -> str:
        return self.info.provider

    def sweep_call(self, mode: str, feeds: dict[str, np.ndarray]):
        """Its module pipeline on fixed token ids (ONNX encoder, then its pooling), then the heads."""
        features = {name: self.torch.from_numpy(feeds[name]) for name in self.input_names}

        def call() -> list[np.ndarray]:
            with self.torch.inference_mode():
                embeddings = self.model(dict(features))["sentence_embedding"].numpy()  # (batch, hidden)
            logits = head_logits(self.heads, embeddings)
            return [logits[task] for task in self.tasks]

        return call

    def text_calls(self, mode: str, texts: list[str], batch_size: int) -> list[TextPass]:
        return [TextPass(lambda: self.logits(texts, batch_size), self._batch_shapes(texts, batch_size), "dynamic")]

    def _batch_shapes(self, texts: list[str], batch_size: int) -> list[list[int]]:
        """The batches `encode` runs: it sorts by characters, not tokens (np.argsort of minus each text's length),
        and pads each batch to its longest row."""
        tokens = self.model.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length)["input_ids"]
        order = np.argsort([-len(text) for text in texts]).tolist()
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        return padded_shapes([len(ids) for ids in tokens], batches)

    def logits(self, texts: list[str], batch_size: int) -> dict[str, np.ndarray]:
        embeddings = self.model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
        return head_logits(self.heads, embeddings)  # float32: its embeddings and the heads' weights are

    def close(self) -> None:
        self.model = None
        self.workdir.cleanup()


def _versions(torch) -> dict[str, str]:
    import onnxruntime
    import sentence_transformers
    import transformers
    from optimum.onnx.version import __version__ as optimum_onnx

    return {"sentence-transformers": sentence_transformers.__version__, "optimum-onnx": optimum_onnx,
            "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__}
