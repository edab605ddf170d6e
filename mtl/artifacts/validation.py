"""What an export checked of each variant, as its manifest records it (`Variant.validation`), typed both ways. No
torch.

    against PyTorch   every variant the export built, on random token batches of shapes it never traced with: where
                      it ran (device, provider), the shapes (cases), the tolerance it was held to (none for int8:
                      shapes and finite values only), each graph output's largest |difference|, argmax agreement,
                      and whether it passed
    labelled data     where the export had some (`--validation-data`, or the checkpoint's recorded files): each
                      task's accuracy, macro-F1 and macro-recall, and for the other variants fp32's figures beside
                      them, the points lost and the argmax agreement with fp32 (real_data), and the files (data)
    int8 status       checked, forced or unchecked, and the limits it was held to: what `--precision auto` goes by

In the manifest the record is one JSON object with these keys side by side, as format 1 already wrote it. Every value
is read as the type and range it must have; anything else is a ValueError naming it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mtl.artifacts.fields import check_type, need, number, numbers, objects
from mtl.config import Range

# An int8 variant's status: checked on labelled data and within the limits, kept past them because the user said
# so, or never checked on labelled data (only for shapes and finite values). "auto" runs only the first two: int8
# is lossy, and an unchecked one may be far off on real text.
CHECKED, FORCED, UNCHECKED = "checked", "forced", "unchecked"
INT8_STATUSES = (CHECKED, FORCED, UNCHECKED)
SHARE = Range(0, 1)  # accuracy, macro-F1, macro-recall, agreement
POINTS = Range(-100, 100)  # a metric's change in percentage points
NON_NEGATIVE = Range(0, math.inf)  # a difference, a tolerance
COUNT = Range(0, 2**63 - 1, whole=True)
DIMENSION = Range(1, 2**31 - 1, whole=True)  # a batch size or sequence length
DROP_LIMIT = Range(0, 100)  # the export's --max-int8-drop and --max-int8-f1-drop


@dataclass(frozen=True)
class Tolerance:
    """How close to PyTorch a variant's outputs must be (`numpy.allclose`)."""

    atol: float
    rtol: float

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> Tolerance:
        return cls(number(data, "atol", NON_NEGATIVE, where), number(data, "rtol", NON_NEGATIVE, where))


@dataclass(frozen=True)
class Int8Limits:
    """Points of each gated metric int8 may lose on any task, against fp32, before it is refused."""

    accuracy: float = 1.0
    macro_f1: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return {"max_accuracy_drop_points": self.accuracy, "max_macro_f1_drop_points": self.macro_f1}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> Int8Limits:
        return cls(number(data, "max_accuracy_drop_points", DROP_LIMIT, where),
                   number(data, "max_macro_f1_drop_points", DROP_LIMIT, where))


@dataclass(frozen=True)
class ParityFigures:
    """One variant against PyTorch on random token batches (`mtl.export.validate.check_variant`)."""

    device: str  # where the variant ran: cpu or cuda
    provider: str  # the ONNX Runtime execution provider it ran on
    cases: tuple[tuple[int, int], ...]  # (batch, sequence) of each batch
    tolerance: Tolerance | None  # None: held to shapes and finite values only (int8, which is lossy by design)
    max_abs_diff: dict[str, float]  # "encoder", "heads/<task>", "model:<output>" -> the largest |diff| over the cases
    # Per task, on random token ids: it tells the graph computes what PyTorch does, not how a variant does on text.
    argmax_agreement: dict[str, float]
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "provider": self.provider, "cases": [list(c) for c in self.cases],
                "tolerance": None if self.tolerance is None else self.tolerance.to_dict(),
                "max_abs_diff": dict(self.max_abs_diff),
                "argmax_agreement_on_random_tokens": dict(self.argmax_agreement), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> ParityFigures:
        cases = need(data, "cases", list, where)
        for i, case in enumerate(cases):
            check_type(case, list, f"{where}cases[{i}]")
            if len(case) != 2:
                raise ValueError(f"{where}cases[{i}] must be [batch, sequence], not {len(case)} numbers")
            for size in case:
                DIMENSION.check(f"{where}cases[{i}]", size)
        if "tolerance" not in data:
            raise KeyError(f"{where}tolerance")
        tolerance = data["tolerance"]
        return cls(
            device=need(data, "device", str, where), provider=need(data, "provider", str, where),
            cases=tuple((batch, sequence) for batch, sequence in cases),
            tolerance=None if tolerance is None
            else Tolerance.from_dict(check_type(tolerance, dict, f"{where}tolerance"), f"{where}tolerance."),
            max_abs_diff=numbers(data, "max_abs_diff", NON_NEGATIVE, where),
            argmax_agreement=numbers(data, "argmax_agreement_on_random_tokens", SHARE, where),
            passed=need(data, "passed", bool, where),
        )


@dataclass(frozen=True)
class LabelledFigures:
    """One variant on one task's labelled data; the comparison with fp32 for every other variant."""

    examples: int
    accuracy: float
    macro_f1: float
    macro_recall: float
    fp32: dict[str, float] | None = None  # fp32's own accuracy, macro_f1 and macro_recall on the same examples
    drop_points: dict[str, float] | None = None  # points each metric loses against fp32 (negative: it gains)
    agreement_with_fp32: float | None = None  # share of examples whose argmax is fp32's

    def to_dict(self) -> dict[str, Any]:
        data = {"examples": self.examples, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "macro_recall": self.macro_recall}
        for key, value in (("fp32", self.fp32), ("drop_points", self.drop_points),
                           ("agreement_with_fp32", self.agreement_with_fp32)):
            if value is not None:
                data[key] = dict(value) if isinstance(value, dict) else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> LabelledFigures:
        return cls(
            examples=number(data, "examples", COUNT, where), accuracy=number(data, "accuracy", SHARE, where),
            macro_f1=number(data, "macro_f1", SHARE, where), macro_recall=number(data, "macro_recall", SHARE, where),
            fp32=numbers(data, "fp32", SHARE, where) if "fp32" in data else None,
            drop_points=numbers(data, "drop_points", POINTS, where) if "drop_points" in data else None,
            agreement_with_fp32=number(data, "agreement_with_fp32", SHARE, where, None),
        )


@dataclass(frozen=True)
class ValidationRecord:
    """Everything the export checked of one variant. A variant built by another tool (the bench's plain int8)
    has no parity figures and no status: it was never checked, and `--precision auto` does not pick it."""

    parity: ParityFigures | None = None
    real_data: dict[str, LabelledFigures] = field(default_factory=dict)  # task -> figures; empty: no labelled data
    data: dict[str, str] = field(default_factory=dict)  # task -> the labelled file the figures come from
    status: str | None = None  # int8 only: CHECKED, FORCED or UNCHECKED
    limits: Int8Limits | None = None  # int8 checked on labelled data: the limits it was held to

    def to_dict(self) -> dict[str, Any]:
        data = self.parity.to_dict() if self.parity is not None else {}
        if self.real_data:
            data["real_data"] = {task: figures.to_dict() for task, figures in self.real_data.items()}
        if self.data:
            data["data"] = dict(self.data)
        if self.status is not None:
            data["status"] = self.status
        if self.limits is not None:
            data["limits"] = self.limits.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> ValidationRecord:
        status = data.get("status")
        if status is not None and (not isinstance(status, str) or status not in INT8_STATUSES):
            raise ValueError(f"{where}status is {repr(status)[:40]}; valid: {', '.join(INT8_STATUSES)}")
        data_files = need(data, "data", dict, where, {})
        for task, path in data_files.items():
            check_type(path, str, f"{where}data.{task}")
        return cls(
            parity=ParityFigures.from_dict(data, where) if "passed" in data else None,
            real_data={task: LabelledFigures.from_dict(figures, f"{where}real_data.{task}.")
                       for task, figures in objects(data, "real_data", where).items()} if "real_data" in data else {},
            data=dict(data_files),
            status=status,
            limits=Int8Limits.from_dict(need(data, "limits", dict, where), f"{where}limits.")
            if "limits" in data else None,
        )
