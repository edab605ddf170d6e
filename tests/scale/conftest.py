"""Ray for the tests of `mtl.scale`: a real local instance of 2 CPUs per test module (no mock), and what the tests
compare the Ray results with: single-process `Predictor.predict` on the same texts. Skipped where ray is not
installed (each module: `pytest.importorskip("ray")`; the `ray` extra, which CI installs)."""

from __future__ import annotations

import pytest

PRECISION = "fp32"  # "auto" picks the tiny export's int8, whose accuracy was never checked on labelled data


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, address="local", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def single_process(export, texts: list[str], tasks=None) -> list[dict]:
    """What one process gives for the texts: the reference every Ray result is compared with."""
    from mtl.runtime import Predictor

    return Predictor.load(export, PRECISION, threads=1).predict(texts, tasks)


def assert_same_predictions(got: dict, want: dict) -> None:
    """Identical labels; scores and probabilities within one step of the 6-decimal rounding both sides apply (the
    two runs batch and pad the texts differently, which moves float32 logits by far less than that step)."""
    assert got.keys() == want.keys()
    for task in want:
        assert got[task]["label"] == want[task]["label"]
        assert got[task]["probabilities"].keys() == want[task]["probabilities"].keys()
        assert list(got[task]["probabilities"]) == list(want[task]["probabilities"])  # the export's label order
        assert got[task]["score"] == pytest.approx(want[task]["score"], abs=1.5e-6)
        for label, p in want[task]["probabilities"].items():
            assert got[task]["probabilities"][label] == pytest.approx(p, abs=1.5e-6)
