"""The three graph kinds of an export (encoder, head, fused) as modules, their torch.onnx.export, and a check that
the saved graphs carry the declared I/O. Each module takes positional tensors in the order of the I/O spec, because
that is how `torch.onnx.export` names them, and returns plain tensors.

The TorchScript exporter (`dynamo=False`) is used on purpose: it exports BERT, RoBERTa, DistilBERT and DeBERTa-v2
in about a tenth of a second per tiny graph (the dynamo exporter takes seconds), writes weights inside the .onnx
file (the dynamo exporter writes a separate .data file), and its attention subgraphs are the ones ONNX Runtime's
transformer optimizer knows how to fuse (measured: 6 Attention + EmbedLayerNormalization fusions on MiniLM, none
on the dynamo graph). Every graph is validated against PyTorch afterwards, whichever exporter made it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from mtl.artifacts.io_spec import GraphSpec
from mtl.artifacts.manifest import VariantFiles
from mtl.errors import ExportError, ExportValidationError
from mtl.model import MultitaskModel


class EncoderGraph(nn.Module):
    """Token inputs -> the pooled sentence embedding (batch, hidden). Pooling is inside the graph."""

    def __init__(self, model: MultitaskModel, input_names: list[str]):
        super().__init__()
        self.encoder = model.encoder
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.encoder(**dict(zip(self.input_names, inputs)))


class FusedGraph(nn.Module):
    """Token inputs -> every task's logits, one tensor per task in model order, from one encoder pass."""

    def __init__(self, model: MultitaskModel, input_names: list[str]):
        super().__init__()
        self.encoder = EncoderGraph(model, input_names)
        self.heads = model.heads

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        pooled = self.encoder(*inputs)  # (batch, hidden)
        return tuple(head(pooled) for head in self.heads.values())  # each (batch, n_labels)


def head_graph(model: MultitaskModel, task: str) -> nn.Module:
    """A task's head as it is: (batch, hidden) -> (batch, n_labels)."""
    return model.heads[task]


ENCODER_FILE = "encoder.onnx"
FUSED_FILE = "model.onnx"


def head_file(task: str) -> str:
    return f"heads/{task}.onnx"


def variant_file(fp32_file: str, precision: str) -> str:
    """model.onnx -> model.int8.onnx; the fp32 files keep their plain names (what other tools look for)."""
    return fp32_file if precision == "fp32" else fp32_file[: -len(".onnx")] + f".{precision}.onnx"


def export_graph(module: torch.nn.Module, example: tuple[torch.Tensor, ...], spec: GraphSpec, path: Path,
                 opset: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The legacy exporter announces its deprecation and warns about traced constants on every call; the
        # validation that follows is what tells whether the graph is right.
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                torch.onnx.export(
                    module, example, str(path), input_names=spec.input_names, output_names=spec.output_names,
                    dynamic_axes=spec.dynamic_axes(), opset_version=opset, do_constant_folding=True, dynamo=False,
                )
        except Exception as err:  # an encoder the exporter cannot trace is the user's model, not our bug
            raise ExportError(f"torch.onnx.export failed for {path.name}: {str(err).splitlines()[0][:300]}") from None
    check_saved_graph(path, spec)


def check_saved_graph(path: Path, spec: GraphSpec) -> None:
    """The saved graph is valid ONNX and declares exactly the spec's names, with its dynamic axes still dynamic
    (an exporter that specialised an example size would write a number there)."""
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        detail = str(err).splitlines()[0][:300]
        raise ExportValidationError(f"{path.name} is not a valid ONNX graph: {detail}") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    problems = _io_problems("input", list(graph.input), spec.inputs)
    problems += _io_problems("output", list(graph.output), spec.outputs)
    if problems:
        raise ExportValidationError(f"{path.name} does not declare the expected I/O:\n  " + "\n  ".join(problems))


def _io_problems(kind: str, values, specs) -> list[str]:
    declared = {v.name: v for v in values}
    if list(declared) != [s.name for s in specs]:
        return [f"{kind}s are {list(declared)}, expected {[s.name for s in specs]}"]
    problems = []
    for spec in specs:
        dims = declared[spec.name].type.tensor_type.shape.dim
        got = [d.dim_param or d.dim_value for d in dims]
        if got != list(spec.shape):
            problems.append(f"{kind} {spec.name} has shape {got}, expected {list(spec.shape)}")
    return problems


def export_fp32_graphs(model: MultitaskModel, specs: dict, folder: Path, example: dict[str, np.ndarray],
                       opset: int) -> VariantFiles:
    """encoder.onnx, heads/<task>.onnx and model.onnx into `folder`; `example` holds the token inputs to trace
    with (batch and sequence >= 2, so no size-1 dimension can be mistaken for a constant)."""
    names = specs["encoder"].input_names
    tokens = tuple(torch.from_numpy(example[n]) for n in names)
    export_graph(EncoderGraph(model, names).eval(), tokens, specs["encoder"], folder / ENCODER_FILE, opset)
    with torch.no_grad():
        pooled = EncoderGraph(model, names).eval()(*tokens)
    heads = {}
    for task, spec in specs["heads"].items():
        heads[task] = head_file(task)
        export_graph(head_graph(model, task).eval(), (pooled,), spec, folder / heads[task], opset)
    export_graph(FusedGraph(model, names).eval(), tokens, specs["model"], folder / FUSED_FILE, opset)
    return VariantFiles(ENCODER_FILE, FUSED_FILE, heads)
