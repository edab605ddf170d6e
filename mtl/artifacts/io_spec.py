"""The one I/O contract of the exported graphs: tensor names, dtypes and dynamic axes.

Export builds its `torch.onnx.export` arguments from these specs, the manifest stores them, the runtime checks
each session against them and tests assert them. No torch here: the runtime imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from mtl.artifacts.fields import check_type, need
from mtl.config import Range
from mtl.errors import ConfigError

BATCH_AXIS = "batch_size"
SEQUENCE_AXIS = "sequence_length"
# Every token input an encoder may take, in the order the graphs declare them. input_ids and attention_mask are
# always there; token_type_ids only where the encoder's forward takes them (RoBERTa and DistilBERT do not).
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
REQUIRED_INPUTS = ("input_ids", "attention_mask")
TOKEN_DTYPE = "int64"
FLOAT_DTYPE = "float32"  # every graph's float inputs and outputs, fp16 variants included
EMBEDDING = "sentence_embedding"

# The graph kinds of an export folder, as the manifest names them.
ENCODER_GRAPH = "encoder"
FUSED_GRAPH = "model"
HEAD_GRAPH = "heads"

Dim = Union[str, int]  # an axis name (dynamic) or a fixed size
DIM_RANGE = Range(0, 2**31 - 1, whole=True)


def logits_name(task: str) -> str:
    """The output that carries one task's logits, in the fused graph and in the task's head graph alike."""
    return f"{task}_logits"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Dim, ...]

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> TensorSpec:
        check_type(data, dict, where.rstrip("."))
        shape = need(data, "shape", list, where)
        for i, dim in enumerate(shape):  # an axis name, or a fixed size
            if not isinstance(dim, str):
                DIM_RANGE.check(f"{where}shape[{i}]", dim)
        return cls(need(data, "name", str, where), need(data, "dtype", str, where), tuple(shape))


@dataclass(frozen=True)
class GraphSpec:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """In the form `torch.onnx.export(dynamic_axes=...)` takes."""
        return {t.name: t.dynamic_axes for t in self.inputs + self.outputs if t.dynamic_axes}

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> GraphSpec:
        check_type(data, dict, where.rstrip("."))
        return cls(*(tuple(TensorSpec.from_dict(t, f"{where}{kind}[{i}].")
                           for i, t in enumerate(need(data, kind, list, where))) for kind in ("inputs", "outputs")))


def token_inputs(input_names: tuple[str, ...] | list[str]) -> tuple[TensorSpec, ...]:
    unknown = [n for n in input_names if n not in TOKEN_INPUTS]
    if unknown:
        raise ConfigError(f"unknown encoder input {unknown[0]!r}; valid: {', '.join(TOKEN_INPUTS)}")
    missing = [n for n in REQUIRED_INPUTS if n not in input_names]
    if missing:
        raise ConfigError(f"encoder inputs must include {', '.join(missing)}")
    # The declared order is fixed, whatever order the checkpoint lists them in.
    ordered = [n for n in TOKEN_INPUTS if n in input_names]
    return tuple(TensorSpec(n, TOKEN_DTYPE, (BATCH_AXIS, SEQUENCE_AXIS)) for n in ordered)


def encoder_spec(input_names, hidden_size: int) -> GraphSpec:
    """Token inputs -> the pooled sentence embedding, (batch, hidden)."""
    return GraphSpec(token_inputs(input_names), (TensorSpec(EMBEDDING, FLOAT_DTYPE, (BATCH_AXIS, hidden_size)),))


def head_spec(task: str, hidden_size: int, num_labels: int) -> GraphSpec:
    """The sentence embedding -> one task's logits, (batch, num_labels)."""
    return GraphSpec(
        (TensorSpec(EMBEDDING, FLOAT_DTYPE, (BATCH_AXIS, hidden_size)),),
        (TensorSpec(logits_name(task), FLOAT_DTYPE, (BATCH_AXIS, num_labels)),),
    )


def fused_spec(input_names, tasks: list[tuple[str, int]]) -> GraphSpec:
    """Token inputs -> every task's logits from one encoder pass; `tasks` is (name, num_labels) in model order."""
    outputs = tuple(TensorSpec(logits_name(name), FLOAT_DTYPE, (BATCH_AXIS, n)) for name, n in tasks)
    return GraphSpec(token_inputs(input_names), outputs)
