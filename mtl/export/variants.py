"""Graph variants: ONNX Runtime transformer fusion (kept only where measured faster), dynamic INT8 for CPUs (attention
fused first where the graph has BERT-style attention) and FP16 for GPUs with float32 inputs and outputs."""

from __future__ import annotations

import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from mtl.artifacts.environment import cpu_flags
from mtl.artifacts.io_spec import GraphSpec
from mtl.errors import ConfigError
from mtl.export.options import INT8_TARGETS
from mtl.runtime.session import GraphSession

log = logging.getLogger(__name__)

# Which HF encoders ORT's "bert" fusions apply to (BERT-style attention and embeddings); for others (DeBERTa's
# relative attention) the optimizer still fuses LayerNorm/Gelu, and the timing decides whether that helps.
OPTIMIZER_MODEL_TYPE = "bert"

# How an int8 graph was built, as the manifest records it: "attention-fused" (ORT's Attention fusion, then dynamic
# quantisation, which turns each Attention into one QAttention) or "plain" (dynamic quantisation of the graph as it
# is: where the fusion finds no BERT-style attention, such as DeBERTa's relative attention).
ATTENTION_FUSED, PLAIN = "attention-fused", "plain"
# The session setting the attention-fused int8 graph is built to run with (the manifest carries it to the runtime).
# ORT's load-time SkipLayerNormalization fusion costs there: its CPU kernel is slower than the Add +
# LayerNormalization it replaces. Measured on MiniLM (AMD EPYC, avx512_vnni, ORT 1.32, 2 threads), this recipe
# against plain int8: 1.26-1.28x at batch 1 x 32, 1.16-1.22x at 1 x 128, 1.09-1.12x at 8 x 64, 1.16-1.18x at
# 32 x 64, with the same accuracy and argmax.
ATTENTION_FUSED_SESSION_CONFIG = {"optimization.disable_specified_optimizers": "SkipLayerNormFusion"}


@dataclass(frozen=True)
class Int8Settings:
    """Dynamic quantisation choices, the same as Optimum's AutoQuantizationConfig presets for each CPU family:
    u8 activations; s8 symmetric weights on VNNI and ARM64, u8 weights on AVX2 (whose u8*s8 instructions can
    saturate)."""

    target: str
    per_channel: bool
    weight_type: str  # "QInt8" | "QUInt8"
    reduce_range: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def detect_int8_target() -> str:
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    return "avx512_vnni" if {"avx512_vnni", "avx512vnni"} & cpu_flags() else "avx2"


def int8_settings(target: str = "auto", per_channel: bool = True) -> Int8Settings:
    if target not in INT8_TARGETS:
        raise ConfigError(f"unknown int8 target {target!r}; valid: {', '.join(INT8_TARGETS)}")
    resolved = detect_int8_target() if target == "auto" else target
    return Int8Settings(resolved, per_channel, "QUInt8" if resolved == "avx2" else "QInt8")


@dataclass(frozen=True)
class Int8Graph:
    """What building one int8 graph chose: its recipe, and the ONNX Runtime session config it must run with."""

    recipe: str
    session_config: dict[str, str]


def build_int8(source: Path, target: Path, settings: Int8Settings, num_heads: int, hidden_size: int) -> Int8Graph:
    """The int8 graph of `source`: attention fused, then quantised (`quantize_int8`); where the fusion finds no
    attention, `source` quantised as it is."""
    attention = _op_count(source, "Attention")  # a graph that `--optimize` fused holds them already
    fused = target.with_name(target.stem + ".attention.onnx")
    try:
        if not attention:
            attention = fuse_attention(source, fused, num_heads, hidden_size)
            source = fused if attention else source
        quantize_int8(source, target, settings)
    finally:
        fused.unlink(missing_ok=True)
    if attention:
        return Int8Graph(ATTENTION_FUSED, dict(ATTENTION_FUSED_SESSION_CONFIG))
    return Int8Graph(PLAIN, {})


def _op_count(path: Path, op_type: str) -> int:
    return sum(n.op_type == op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


def fuse_attention(source: Path, target: Path, num_heads: int, hidden_size: int) -> int:
    """Write `source` with ORT's Attention fusion (and the plain LayerNorm/Gelu ones) to `target`; returns how many
    Attention nodes it holds. The other fusions stay off: SkipLayerNormalization and BiasGelu measured slower once
    quantised (MiniLM, as above), EmbedLayerNormalization no faster. The raw 0/1 mask, not a mask index: right for
    any mask (a left-padded batch too), and as fast here."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions(OPTIMIZER_MODEL_TYPE)
    options.enable_attention = True
    options.enable_skip_layer_norm = False
    options.enable_bias_skip_layer_norm = False
    options.enable_bias_gelu = False
    options.enable_embed_layer_norm = False
    options.use_raw_attention_mask(True)
    model = optimize_model(str(source), model_type=OPTIMIZER_MODEL_TYPE, num_heads=num_heads, hidden_size=hidden_size,
                           optimization_options=options, opt_level=0, use_gpu=False)
    model.save_model_to_file(str(target))
    return len(model.get_nodes_by_op_type("Attention"))


def quantize_int8(source: Path, target: Path, settings: Int8Settings) -> None:
    """Dynamic int8 of the encoder's MatMuls/Attention/embeddings. Gemm nodes are left in float: in these graphs
    they are exactly the task heads (the encoder's Linears act on 3-D tensors and export as MatMul), and a
    quantised head loses far more than it gains: measured on MiniLM with nearest-centroid heads, int8 heads cost
    33 points of AG News accuracy, the int8 encoder 0.8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    gemms = [n.name for n in onnx.load(str(source), load_external_data=False).graph.node if n.op_type == "Gemm"]
    # The quantiser rewrites each Gemm into MatMul (+ Add) named "<gemm>_MatMul" before choosing nodes.
    keep_float = gemms + [f"{name}_MatMul" for name in gemms]

    quiet = _DropRecordsFrom("onnxruntime/quantization")
    logging.getLogger().addFilter(quiet)  # its advice ("consider pre-processing") goes to the root logger
    try:
        quantize_dynamic(
            str(source), str(target), per_channel=settings.per_channel, reduce_range=settings.reduce_range,
            weight_type=getattr(QuantType, settings.weight_type), nodes_to_exclude=keep_float,
            # DefaultTensorType: ORT 1.32 cannot infer some weight dtypes of BERT graphs without it
            # ("Unable to find data type for weight_name=...").
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT, "WeightSymmetric": True},
        )
    finally:
        logging.getLogger().removeFilter(quiet)


class _DropRecordsFrom(logging.Filter):
    def __init__(self, path_part: str):
        super().__init__()
        self.path_part = path_part

    def filter(self, record: logging.LogRecord) -> bool:
        return self.path_part not in record.pathname.replace("\\", "/")


def convert_fp16(source: Path, target: Path) -> None:
    """Float16 weights and compute, float32 inputs and outputs (the runtime and the heads stay float32)."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(target))


def optimize_if_faster(path: Path, spec: GraphSpec, feeds: dict[str, np.ndarray], num_heads: int,
                       hidden_size: int, threads: int) -> dict:
    """Fuse `path` in place if the fused graph gives the same outputs and runs faster on `feeds`; returns what
    was measured and decided, for the manifest."""
    from onnxruntime.transformers.optimizer import optimize_model

    candidate = path.with_name(path.stem + ".fused.onnx")
    optimized = optimize_model(str(path), model_type=OPTIMIZER_MODEL_TYPE, num_heads=num_heads,
                               hidden_size=hidden_size, opt_level=0, use_gpu=False)
    optimized.save_model_to_file(str(candidate))
    fused_ops = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    record = {"fused_operators": fused_ops}
    try:
        before = GraphSession(path, spec, "cpu", threads)
        after = GraphSession(candidate, spec, "cpu", threads)
        outputs = spec.output_names
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(before.run(feeds, outputs), after.run(feeds, outputs)))
        ms_before, ms_after = _time_pair(before, after, feeds, outputs)
        record.update(max_abs_diff=diff, ms_before=round(ms_before, 3), ms_after=round(ms_after, 3))
        keep = diff <= 1e-4 and ms_after < ms_before
        record["kept"] = keep
        record["reason"] = ("faster" if keep else "changed outputs" if diff > 1e-4 else "not faster")
        del before, after
        if keep:
            shutil.move(str(candidate), str(path))
    finally:
        candidate.unlink(missing_ok=True)
    return record


def _time_pair(a: GraphSession, b: GraphSession, feeds, outputs, repeats: int = 10) -> tuple[float, float]:
    """Median milliseconds of each, interleaved so that load from other processes hits both alike."""
    times = ([], [])
    for _ in range(2):
        a.run(feeds, outputs), b.run(feeds, outputs)
    for _ in range(repeats):
        for session, sink in ((a, times[0]), (b, times[1])):
            started = time.perf_counter()
            session.run(feeds, outputs)
            sink.append((time.perf_counter() - started) * 1000)
    return float(np.median(times[0])), float(np.median(times[1]))
