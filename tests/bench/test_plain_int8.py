"""The bench's ort-int8-plain backend: the previous int8 recipe (the export's fp32 graphs quantised as they are, no
session config) built by the bench from the export, run beside the export's own int8 in one bench, shown in every
table, with no cold start, and gone from disk afterwards."""

import json
from collections import Counter
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from mtl.artifacts.manifest import MANIFEST_FILE, load_manifest
from mtl.bench.backends import Backend, parse_backends, resolve_backends
from mtl.bench.plain_int8 import plain_int8_export
from mtl.cli import app
from mtl.errors import BenchError, ConfigError
from mtl.export.variants import PLAIN
from tests.factory import bench_model

HAVE_ORT = {"torch": False, "ort": True, "st": False}


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_int8_plain_is_asked_for_by_name_reads_an_int8_export_and_has_no_cold_start():
    chosen, _ = resolve_backends(parse_backends("ort-int8,ort-int8-plain"), None, "cpu", HAVE_ORT, ("fp32", "int8"))
    assert [b.name for b in chosen] == ["ort-int8", "ort-int8-plain"]
    plain = chosen[1]
    assert (plain.variant, plain.graph_optimization, plain.cold_start, chosen[0].cold_start) == ("int8", "all",
                                                                                                 False, True)
    defaults, _ = resolve_backends(None, None, "cpu", HAVE_ORT, ("fp32", "int8"))
    assert "ort-int8-plain" not in [b.name for b in defaults]  # a measure of one change, not a default row
    with pytest.raises(ConfigError, match="backend ort-int8-plain: precision int8 was not exported"):
        resolve_backends(("ort-int8-plain",), None, "cpu", HAVE_ORT, ("fp32",))
    with pytest.raises(ConfigError, match="runs on cpu only"):
        resolve_backends(("ort-int8-plain",), None, "cuda", HAVE_ORT, ("fp32", "int8"))
    assert Backend("ort", "int8-plain", "cpu").name == "ort-int8-plain"


def test_the_plain_folder_holds_the_previous_recipe_beside_the_exports_fp32(tmp_path):
    onnx = bench_model()[1]
    export = load_manifest(onnx)
    folder = plain_int8_export(onnx, tmp_path / "onnx")
    manifest = load_manifest(folder)  # a complete export folder: every file it names is there
    int8 = manifest.variants["int8"]
    assert set(manifest.variants) == {"fp32", "int8"} and manifest.variants["fp32"] == export.variants["fp32"]
    assert int8.session_config == {} and set(int8.settings["recipe"].values()) == {PLAIN}
    assert int8.settings["quantization"] == export.variants["int8"].settings["quantization"]
    assert int8.files.heads == export.variants["fp32"].files.heads  # the float heads, as the export's int8
    plain, fp32 = _ops(folder / int8.files.model), _ops(onnx / export.variants["fp32"].files.model)
    # No fusion of its own: attention is quantised only where `--optimize` baked it into the fp32 graph already.
    assert plain["QAttention"] == fp32["Attention"] and plain["MatMulInteger"] > 0
    with pytest.raises(FileExistsError):  # never writes into a folder that is there
        plain_int8_export(onnx, tmp_path / "onnx")


def test_the_plain_folder_needs_the_exports_int8_settings(tiny, tmp_path):
    folder = tiny.copy_export("bert")
    data = json.loads((folder / MANIFEST_FILE).read_text())
    del data["variants"]["int8"]["settings"]["quantization"]
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BenchError, match="the int8 variant records no usable quantization settings"):
        plain_int8_export(folder, tmp_path / "plain")
    del data["variants"]["int8"]
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(BenchError, match="has no int8 variant"):
        plain_int8_export(folder, tmp_path / "plain")


def test_one_bench_sets_the_previous_int8_beside_the_new_one(tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the bench builds int8-plain
    out, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    result = CliRunner().invoke(app, [str(a) for a in (
        "bench", bench_model()[1], "--backend", "ort-int8,ort-int8-plain", "--mode", "fused,split",
        "--workload", "synthetic", "--batch-sizes", 1, "--seq-lengths", 32, "--warmup", 0, "--runs", 2,
        "--threads", 1, "--json", out, "--markdown", markdown)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert sorted((r["backend"], r["mode"]) for r in report["rows"]) == [
        ("ort-int8", "fused"), ("ort-int8", "split"), ("ort-int8-plain", "fused"), ("ort-int8-plain", "split")]
    assert [c["backend"] for c in report["cold_start"]] == ["ort-int8"]
    text = markdown.read_text()
    assert "| ort-int8-plain | fused | 1 | 32 |" in text
    # the figure, read off the report: the previous recipe's p50 over the new one's, same run and cell
    p50 = {(r["backend"], r["mode"]): r["p50_s"] for r in report["rows"]}
    expected = p50[("ort-int8-plain", "fused")] / p50[("ort-int8", "fused")]
    assert (f"ort-int8 over ort-int8-plain (the previous int8 recipe), p50 over p50 in this run: fused 1x32 "
            f"{expected:.2f}×, split 1x32") in text
    assert any("ort-int8-plain is the int8 variant as exports built it" in note for note in report["notes"])
    assert list(Path(scratch).iterdir()) == []  # the built folder is gone with its worker
