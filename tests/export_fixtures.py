"""Compatibility only: the names tests/export/test_triton.py (not migrated yet) imports, now served by the one
tiny-model factory in tests/factory.py. New tests use the fixtures of tests/conftest.py; delete this module once
nothing imports it."""

from tests.factory import ALL_PRECISIONS, MAX_LENGTH, TASKS, TINY
from tests.factory import ARCHITECTURES as ARCHS

scratch = TINY.scratch
tiny_checkpoint = TINY.checkpoint
tiny_export = TINY.export
copy_export = TINY.copy_export
minilm_export = TINY.minilm_export

__all__ = ["ALL_PRECISIONS", "ARCHS", "MAX_LENGTH", "TASKS", "copy_export", "minilm_export", "scratch",
           "tiny_checkpoint", "tiny_export"]
