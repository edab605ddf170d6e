"""The modules that become the exported graphs. Each takes positional tensors in the order of the I/O spec
(`mtl.io_spec`), because that is how `torch.onnx.export` names them, and returns plain tensors."""

from __future__ import annotations

import torch
from torch import nn

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
