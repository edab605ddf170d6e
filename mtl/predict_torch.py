"""Inference with the PyTorch model from a checkpoint folder: evaluation, `predict` on a checkpoint, and
the PyTorch side of comparisons with the exported graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mtl.config import ModelConfig
from mtl.errors import ConfigError
from mtl.checkpoint import check_checkpoint
from mtl.model import MultitaskModel, load_tokenizer
from mtl.predictions import length_sorted_batches, prediction_records


class TorchPredictor:
    def __init__(self, model: MultitaskModel, tokenizer):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config: ModelConfig = model.model_config

    @classmethod
    def load(cls, checkpoint: Path) -> TorchPredictor:
        folder = check_checkpoint(checkpoint)
        return cls(MultitaskModel.from_pretrained(folder), load_tokenizer(str(folder)))

    def check_tasks(self, tasks: list[str] | None) -> list[str]:
        names = list(self.config.task_names)
        unknown = [t for t in tasks or [] if t not in names]
        if unknown:
            raise ConfigError(f"unknown task {unknown[0]!r}; valid: {', '.join(names)}")
        return list(tasks) if tasks else names

    @torch.inference_mode()
    def logits(self, texts: list[str], tasks: list[str] | None = None, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Every requested task's logits, (len(texts), n_labels) each, in input order. One encoder pass per batch."""
        tasks = self.check_tasks(tasks)
        encoded = self.tokenizer(texts, truncation=True, max_length=self.config.max_length)
        out = {t: np.zeros((len(texts), len(self.config.task(t).labels)), dtype=np.float32) for t in tasks}
        for rows in length_sorted_batches([len(ids) for ids in encoded["input_ids"]], batch_size):
            batch = self.tokenizer.pad(
                {name: [encoded[name][i] for i in rows] for name in self.config.input_names}, return_tensors="pt"
            )
            logits = self.model.logits_by_task(**dict(batch))
            for task in tasks:
                out[task][rows] = logits[task].float().numpy()
        return out

    def predict(self, texts: list[str], tasks: list[str] | None = None, batch_size: int = 64) -> list[dict]:
        logits = self.logits(texts, tasks, batch_size)
        return prediction_records(logits, {t: self.config.task(t).labels for t in logits})
