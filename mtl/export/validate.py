"""Validation of exported graphs against PyTorch: every graph, every output, on shapes the export never saw.

Cases: batch 1, 2 and 8 x a short, a medium and a max-length sequence; in each batch the first row is unpadded
and the others are right-padded to random lengths. Each output is compared by shape, then finiteness, then
`allclose` (fp32 and fp16). Int8 is lossy by design, so it is held to shapes and finite values here and judged on
real data instead (`mtl.export.accuracy`). All mismatches are collected; the caller raises them as one error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mtl.artifacts.io_spec import EMBEDDING, logits_name
from mtl.artifacts.manifest import VariantFiles
from mtl.artifacts.validation import ParityFigures, Tolerance
from mtl.export.graphs import EncoderGraph
from mtl.model import MultitaskModel
from mtl.runtime.session import CPU_PROVIDER, GraphSession

BATCH_SIZES = (1, 2, 8)


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-4),
    "fp16": Tolerance(atol=2e-2, rtol=2e-2),  # measured on MiniLM: max |diff| ~2e-3 on the embedding
    "int8": None,
}


@dataclass(frozen=True)
class TokenSource:
    """What synthetic token rows are made of."""

    input_names: list[str]
    vocab_size: int
    pad_token_id: int
    type_vocab_size: int = 0


def sequence_lengths(max_length: int) -> list[int]:
    return sorted({min(5, max_length), max(2, max_length // 2), max_length})


def token_batch(source: TokenSource, batch: int, seq: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random ids; row 0 fills the sequence, the other rows are right-padded (as the runtime pads)."""
    low = min(5, source.vocab_size - 1)  # keep clear of the usual special-token ids at the start of a vocab
    ids = rng.integers(low, source.vocab_size, size=(batch, seq), dtype=np.int64)
    lengths = [seq] + [int(rng.integers(2, seq)) if seq > 2 else seq for _ in range(batch - 1)]
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
        ids[row, length:] = source.pad_token_id
        if source.type_vocab_size >= 2:
            types[row, length // 2 : length] = 1  # a second segment, as a sentence pair would have
    available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: available[name] for name in source.input_names}


def example_inputs(source: TokenSource, max_length: int) -> dict[str, np.ndarray]:
    """What the export traces with: batch 3, sequence 7 (or less), sizes the validation cases do not use."""
    return token_batch(source, 3, min(7, max_length), np.random.default_rng(1234))


def validation_cases(source: TokenSource, max_length: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [token_batch(source, b, s, rng) for b in BATCH_SIZES for s in sequence_lengths(max_length)]


@dataclass
class Reference:
    embedding: np.ndarray  # (batch, hidden)
    logits: dict[str, np.ndarray]  # task -> (batch, n_labels)


def torch_references(model: MultitaskModel, cases: list[dict[str, np.ndarray]],
                     input_names: list[str]) -> list[Reference]:
    encoder = EncoderGraph(model, input_names).eval()
    references = []
    with torch.no_grad():
        for feeds in cases:
            pooled = encoder(*(torch.from_numpy(feeds[n]) for n in input_names))
            logits = {task: head(pooled).numpy() for task, head in model.heads.items()}
            references.append(Reference(pooled.numpy(), logits))
    return references


class Comparison:
    """Collects figures and mismatches over all cases of one variant."""

    def __init__(self, tolerance: Tolerance | None):
        self.tolerance = tolerance
        self.max_abs_diff: dict[str, float] = {}
        self.agree: dict[str, list[int]] = {}  # task -> [rows whose argmax matches PyTorch, rows]
        self.mismatches: list[str] = []

    def compare(self, label: str, where: str, got: np.ndarray, want: np.ndarray) -> bool:
        """`label` keys the figures (graph[:output]); `where` names the file and case in a mismatch."""
        if got.shape != want.shape:
            self.mismatches.append(f"{where}: output shape {got.shape}, PyTorch {want.shape}")
            return False
        if not np.all(np.isfinite(got)):
            self.mismatches.append(f"{where}: output has NaN or infinite values")
            return False
        diff = float(np.max(np.abs(got.astype(np.float64) - want))) if got.size else 0.0
        self.max_abs_diff[label] = max(self.max_abs_diff.get(label, 0.0), diff)
        tol = self.tolerance
        if tol is not None and not np.allclose(got, want, atol=tol.atol, rtol=tol.rtol):
            self.mismatches.append(f"{where}: max |diff| {diff:.3g} exceeds atol {tol.atol:g} / rtol {tol.rtol:g}")
        return True

    def count_agreement(self, task: str, got: np.ndarray, want: np.ndarray) -> None:
        counts = self.agree.setdefault(task, [0, 0])
        counts[0] += int(np.sum(got.argmax(-1) == want.argmax(-1)))
        counts[1] += len(want)


def check_variant(folder: Path, files: VariantFiles, specs: dict, cases: list[dict[str, np.ndarray]],
                  references: list[Reference], tolerance: Tolerance | None, threads: int,
                  device: str = "cpu", session_config: dict[str, str] | None = None
                  ) -> tuple[ParityFigures, list[str]]:
    """Run every graph of one variant on every case, with the session config it will run with; return (figures
    for the manifest, mismatches)."""
    result = Comparison(tolerance)
    encoder = GraphSession(folder / files.encoder, specs["encoder"], device, threads, session_config=session_config)
    fused = GraphSession(folder / files.model, specs["model"], device, threads, session_config=session_config)
    heads = {t: GraphSession(folder / f, specs["heads"][t], device, threads, session_config=session_config)
             for t, f in files.heads.items()}
    tasks = list(files.heads)
    for feeds, ref in zip(cases, references):
        case = "batch={} seq={}".format(*feeds["input_ids"].shape)
        got = encoder.run(feeds, [EMBEDDING])[0]
        result.compare("encoder", f"{files.encoder} {EMBEDDING} {case}", got, ref.embedding)
        for task, session in heads.items():
            got = session.run({EMBEDDING: ref.embedding}, [logits_name(task)])[0]
            result.compare(f"heads/{task}", f"{files.heads[task]} {logits_name(task)} {case}", got, ref.logits[task])
        outputs = fused.run(feeds, [logits_name(t) for t in tasks])
        for task, got in zip(tasks, outputs):
            name = logits_name(task)
            if result.compare(f"model:{name}", f"{files.model} {name} {case}", got, ref.logits[task]):
                result.count_agreement(task, got, ref.logits[task])
    figures = ParityFigures(
        device=device, provider=encoder.session.get_providers()[0] if device == "cuda" else CPU_PROVIDER,
        cases=tuple(tuple(f["input_ids"].shape) for f in cases), tolerance=tolerance,
        max_abs_diff=result.max_abs_diff,
        argmax_agreement={t: round(a / n, 6) for t, (a, n) in result.agree.items()},
        passed=not result.mismatches,
    )
    return figures, result.mismatches
