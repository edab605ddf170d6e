"""What a training run's checkpoint records about how it was made, beside the model: the library versions it was
trained with, as an export's manifest records those it was exported with."""

from __future__ import annotations

import json
import platform
from importlib import metadata

from mtl.artifacts.checkpoint import VERSIONS_FILE


def test_a_trained_checkpoint_records_the_library_versions_it_was_trained_with(recorded_checkpoint):
    model, _, _ = recorded_checkpoint
    versions = json.loads((model / VERSIONS_FILE).read_text(encoding="utf-8"))
    assert versions["python"] == platform.python_version()
    for package in ("torch", "transformers", "tokenizers", "numpy"):
        assert versions[package] == metadata.version(package), package
