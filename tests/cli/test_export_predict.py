"""The CLI paths of `mtl-onnx export` and `mtl-onnx predict` (export folder and checkpoint), and every bad input:
one `error:` line on stderr, exit code 1, no traceback, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtl.artifacts.manifest import MANIFEST_FILE
from mtl.cli import app
from tests.factory import TASKS, demo_rows, write_jsonl

runner = CliRunner()
TEXTS = ["the movie was great", "stocks rally as the market won", "team lost the game"]


def invoke(*args, stdin: bytes | None = None):
    return runner.invoke(app, [str(a) for a in args], input=stdin)


def rows(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def assert_one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 1, (result.exit_code, result.stdout, result.stderr)
    # besides the line of what predict runs on, once it has loaded the export
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("running on ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def assert_usage_error(result, option: str, valid: str) -> None:
    """A value the option's type refuses: Typer's usage error (exit 2) names the option and what is valid."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert option in result.stderr and valid in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_export_command_shows_steps_and_a_table(tiny):
    parent = tiny.scratch("cli-export")
    data = parent / "topic.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                            for t, y in zip(TEXTS * 4, ["World", "Business", "Sports"] * 4)))
    out = parent / "onnx"
    result = invoke("export", tiny.checkpoint("bert"), "--output", out, "--precision", "fp32,int8",
                    "--validation-data", f"topic={data}", "--max-int8-drop", "50", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "✓ exported encoder, 2 head(s) and the fused graph" in result.stderr
    assert "✓ validated int8 against PyTorch on 9 shapes" in result.stderr
    for text in ("model.int8.onnx", "heads/topic.onnx", "encoder.onnx", "on labelled data (int8: checked)"):
        assert text in result.stdout
    assert (out / MANIFEST_FILE).is_file()
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    int8 = manifest["variants"]["int8"]["validation"]
    assert int8["real_data"]["topic"]["examples"] == 12 and int8["status"] == "checked"


def test_predict_on_an_export_folder_from_arguments(tiny):
    result = invoke("predict", tiny.export("bert"), *TEXTS, "--precision", "fp32", "--threads", "1")
    assert result.exit_code == 0, result.output
    out = rows(result)
    assert [r["text"] for r in out] == TEXTS
    assert all(set(r["predictions"]) == set(TASKS) for r in out)
    split = rows(invoke("predict", tiny.export("bert"), *TEXTS, "--precision", "fp32", "--execution", "split",
                        "-t", "topic"))
    assert [r["predictions"]["topic"] for r in split] == [r["predictions"]["topic"] for r in out]


def test_export_folder_and_checkpoint_give_the_same_labels(tiny):
    onnx = rows(invoke("predict", tiny.export("bert"), *TEXTS, "--precision", "fp32"))
    torch = rows(invoke("predict", tiny.checkpoint("bert"), *TEXTS))
    for a, b in zip(onnx, torch):
        for task in TASKS:
            assert a["predictions"][task]["label"] == b["predictions"][task]["label"]
            assert a["predictions"][task]["score"] == pytest.approx(b["predictions"][task]["score"], abs=1e-4)
    checkpoint_with_device = invoke("predict", tiny.checkpoint("bert"), "x", "--device", "cuda")
    assert_one_line_error(checkpoint_with_device, "apply to export folders")


def test_files_and_stdin_keep_one_row_per_input_with_errors_in_place(tiny):
    folder = tiny.scratch("inputs")
    txt = folder / "texts.txt"
    txt.write_bytes(b"good film\n\xff\xfe broken bytes\n\nlast one\n")
    jsonl = folder / "texts.jsonl"
    jsonl.write_bytes(b'{"text": "fine"}\n{"text": ""}\nnot json\n\n{"other": 1}\n{"text": "caf\xe9"}\n'
                      b'{"text": "ok"}\n')
    csv = folder / "texts.csv"
    csv.write_text('id,text\n1,"a, quoted, text"\n2,\n3,team won\n')
    expected = {  # each bad row's error starts with FILE:LINE
        txt: [None, ":2: not valid UTF-8", ":3: empty text", None],
        jsonl: [None, ":2: field 'text': empty text", ":3: not valid JSON", ":5: missing field 'text'",
                ":6: not valid UTF-8", None],
        csv: [None, ":3: field 'text': empty text", None],
    }
    for path, errors in expected.items():
        result = invoke("predict", tiny.export("bert"), "--file", path, "-t", "sentiment")
        got = rows(result)
        assert len(got) == len(errors), path
        for row, error in zip(got, errors):
            assert row.get("error") is None if error is None else row["error"].startswith(f"{path}{error}"), row
        assert all("predictions" in r for r, e in zip(got, errors) if e is None)
        failed = sum(e is not None for e in errors)
        assert_one_line_error(result, f"{failed} of {len(errors)} rows could not be classified")
    result = invoke("predict", tiny.export("bert"), "--file", "-", stdin=b"one\ntwo\nthree\n")
    assert result.exit_code == 0 and [r["text"] for r in rows(result)] == ["one", "two", "three"]
    result = invoke("predict", tiny.export("bert"), "--file", "-", stdin=b"one\n\xc3(\n")
    assert [r.get("error", "")[:20] for r in rows(result)] == ["", "-:2: not valid UTF-8"]
    assert_one_line_error(result, "1 of 2 rows could not be classified")


def test_a_megabyte_text_is_truncated_not_an_error(tiny):
    result = invoke("predict", tiny.export("bert"), "stocks rally " * 80_000, "-t", "topic")
    assert result.exit_code == 0, result.stderr
    assert len(rows(result)) == 1 and "predictions" in rows(result)[0]


def test_cli_predict_on_an_export_folder_never_imports_torch(tiny):
    code = textwrap.dedent(f"""
        import sys
        from mtl.cli import app
        top = sorted(m for m in ("torch", "transformers") if m in sys.modules)
        try:
            app(["predict", {str(tiny.export("bert"))!r}, "the movie was great"])
        except SystemExit as exit:
            assert exit.code in (0, None), exit.code
        print(top, sorted(m for m in ("torch", "transformers") if m in sys.modules), file=sys.stderr)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[] []"
    assert json.loads(out.stdout)["predictions"]["topic"]["label"] in TASKS["topic"]


# --- bad input: one line, exit 1, nothing half-written ---------------------------------------------------------


def _broken(tiny, kind: str) -> Path:
    folder = tiny.copy_export()
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    if kind == "truncated":
        data = (folder / "model.int8.onnx").read_bytes()
        (folder / "model.int8.onnx").write_bytes(data[: len(data) // 3])
    elif kind == "version":
        manifest["format_version"] = 99
    elif kind == "missing-file":
        manifest["variants"]["int8"]["files"]["model"] = "model.gone.onnx"
    elif kind == "tokenizer":
        (folder / "tokenizer.json").unlink()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("kind, fragment", [
    ("truncated", "model.int8.onnx: "),  # asked for with --precision int8; named by its size against the manifest
    ("version", "manifest format version 99 is not supported"),
    ("missing-file", "names model.gone.onnx, which is missing"),
    ("tokenizer", "names tokenizer.json, which is missing"),
])
def test_broken_export_folders(tiny, kind, fragment):
    # "auto" would run fp32: the standard export's int8 variant was never checked on labelled data.
    assert_one_line_error(invoke("predict", _broken(tiny, kind), "some text", "--precision", "int8"), fragment)


@pytest.mark.parametrize("args, valid", [
    (["--precision", "int4"], "'auto', 'fp32', 'int8', 'fp16'"),
    (["--device", "tpu"], "'cpu', 'cuda'"),
    (["--execution", "both"], "'fused', 'split'"),
    (["--batch-size", "0"], "greater than or equal to 1"),
    (["--threads", "-1"], "greater than or equal to 1"),
])
def test_bad_predict_choices_are_usage_errors(tiny, args, valid):
    assert_usage_error(invoke("predict", tiny.export("bert"), "some text", *args), args[0], valid)


@pytest.mark.parametrize("args, fragment", [
    (["-t", "nope"], "unknown task 'nope'; valid: topic, sentiment"),
    (["--precision", "fp16", "--file", "/no/such/file.txt"], "/no/such/file.txt: file not found"),
])
def test_bad_predict_options(tiny, args, fragment):
    result = invoke("predict", tiny.export("bert"), "some text", *args)
    assert_one_line_error(result, fragment)
    assert result.stdout == ""


def test_cuda_requested_without_cuda(tiny, monkeypatch):
    import mtl.runtime.session as session

    monkeypatch.setattr(session.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert_one_line_error(invoke("predict", tiny.export("bert"), "x", "--device", "cuda"),
                          "CUDA requested, but ONNX Runtime has no CUDA execution provider")
    fallback = invoke("predict", tiny.export("bert"), "x", "--device", "cuda", "--fallback-cpu")
    assert fallback.exit_code == 0 and len(rows(fallback)) == 1


def test_empty_text_and_no_input(tiny):
    result = invoke("predict", tiny.export("bert"), "   ")
    assert rows(result) == [{"text": "   ", "error": "empty text"}]
    assert_one_line_error(result, "1 of 1 rows could not be classified")
    assert_one_line_error(invoke("predict", tiny.export("bert")), "no input")


def test_not_a_checkpoint_for_predict_and_export(tiny):
    empty = tiny.scratch("not-a-checkpoint")
    assert_one_line_error(invoke("predict", empty, "x"), "not a complete mtl-onnx checkpoint")
    out = empty / "out"
    assert_one_line_error(invoke("export", empty, "-o", out), "not a complete mtl-onnx checkpoint")
    assert_one_line_error(invoke("export", tiny.export("bert"), "-o", out), "not a complete mtl-onnx checkpoint")
    assert not out.exists()


@pytest.mark.parametrize("args, fragment", [
    (["--validation-data", "topic"], "bad --validation-data 'topic': expected TASK=FILE"),
    (["--validation-data", "nope={labelled}"], "unknown task 'nope'"),
    (["--validation-data", "topic=/no/such.jsonl"], "/no/such.jsonl: file not found"),
    (["--max-int8-drop", "-1"], "max_int8_drop must be in [0, 100], got -1.0"),
])
def test_bad_export_options_write_nothing(tiny, args, fragment):
    parent = tiny.scratch("bad-export")
    labelled = write_jsonl(tiny.scratch("bad-export-data") / "topic.jsonl", demo_rows("ag_news", "validation", 4))
    args = [a.format(labelled=labelled) for a in args]
    assert_one_line_error(invoke("export", tiny.checkpoint("bert"), "-o", parent / "out", *args), fragment)
    assert list(parent.iterdir()) == []


def test_an_unknown_export_precision_is_a_usage_error(tiny):
    parent = tiny.scratch("bad-export-precision")
    result = invoke("export", tiny.checkpoint("bert"), "-o", parent / "out", "--precision", "fp32,int4")
    assert_usage_error(result, "'--precision'", "unknown precision 'int4'; valid: fp32, int8, fp16")
    assert list(parent.iterdir()) == []


def test_bad_export_choices_are_usage_errors(tiny):
    parent = tiny.scratch("bad-export-choice")
    result = invoke("export", tiny.checkpoint("bert"), "-o", parent / "out", "--int8-target", "sse")
    assert_usage_error(result, "--int8-target", "'auto', 'avx512_vnni', 'avx2', 'arm64'")
    assert list(parent.iterdir()) == []


def test_export_over_an_existing_export_needs_overwrite(tiny):
    folder = tiny.copy_export("roberta")
    before = (folder / MANIFEST_FILE).read_text()
    assert_one_line_error(invoke("export", tiny.checkpoint("roberta"), "-o", folder),
                          "already holds an mtl-onnx export; pass --overwrite")
    assert (folder / MANIFEST_FILE).read_text() == before


def test_export_also_writes_a_validated_triton_repository(tiny):
    parent = tiny.scratch("cli-triton")
    result = invoke("export", tiny.checkpoint("roberta"), "--output", parent / "onnx", "--precision", "fp32,int8",
                    "--threads", "1", "--triton", parent / "triton")
    assert result.exit_code == 0, result.output
    assert "Triton model repository in" in result.stderr
    from mtl.export.triton import load_triton_config

    config = load_triton_config(parent / "triton" / "mtl")
    assert [i.name for i in config.input] == ["input_ids", "attention_mask"]  # RoBERTa: no token_type_ids
    # Triton's "auto" serves a checked variant only: this int8 was never checked on labelled data, so fp32.
    served = parent / "triton" / "mtl" / "1" / "model.onnx"
    assert served.read_bytes() == (parent / "onnx" / "model.onnx").read_bytes()


def test_evaluate_an_export_folder_like_its_checkpoint(tiny):
    parent = tiny.scratch("cli-evaluate")
    data = parent / "topic.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                            for t, y in zip(TEXTS * 4, ["World", "Business", "Sports"] * 4)))
    figures = {}
    for name, model, extra in (("torch", tiny.checkpoint("bert"), []),
                               ("onnx", tiny.export("bert"), ["--precision", "fp32"])):
        out = parent / f"{name}.json"
        result = invoke("evaluate", model, "--task", f"topic={data}", "--json", out, *extra)
        assert result.exit_code == 0, result.output
        figures[name] = json.loads(out.read_text())
    assert figures["onnx"]["topic"] == pytest.approx(figures["torch"]["topic"])


def test_a_triton_precision_that_will_not_be_exported_fails_before_the_export(tiny, monkeypatch):
    from mtl.export import pipeline

    def not_reached(*args, **kwargs):
        raise AssertionError("the export started")

    monkeypatch.setattr(pipeline, "export_checkpoint", not_reached)
    parent = tiny.scratch("triton-precision")
    for precision, fragment in (("fp16", "--triton-precision fp16 is not among the exported precisions (fp32)"),
                                ("int8", "add it to --precision or use --triton-precision auto")):
        result = invoke("export", tiny.checkpoint("bert"), "-o", parent / "onnx", "--triton", parent / "triton",
                        "--triton-precision", precision)
        assert_one_line_error(result, fragment)
    assert_usage_error(invoke("export", tiny.checkpoint("bert"), "-o", parent / "onnx", "--triton",
                              parent / "triton", "--triton-precision", "int4"), "--triton-precision", "'auto'")
    foreign = parent / "triton" / "mtl"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    assert_one_line_error(invoke("export", tiny.checkpoint("bert"), "-o", parent / "onnx", "--triton",
                                 parent / "triton"), "holds no mtl-onnx Triton model")
    assert sorted(p.name for p in parent.iterdir()) == ["triton"] and (foreign / "notes.txt").read_text() == "mine"


def test_evaluate_json_goes_where_the_user_pointed_and_is_checked_first(tiny, monkeypatch):
    import mtl.cli.predict as predict_cli

    parent = tiny.scratch("evaluate-json")
    data = parent / "topic.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                            for t, y in zip(TEXTS, ["World", "Business", "Sports"])))
    real = parent / "kept" / "metrics.json"
    real.parent.mkdir()
    real.write_text("old")
    link = parent / "metrics.json"
    link.symlink_to(real)
    result = invoke("evaluate", tiny.export("bert"), "--task", f"topic={data}", "--json", link, "--precision", "fp32")
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and "topic" in json.loads(real.read_text())

    def not_reached(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(predict_cli, "_load_predictor", not_reached)
    for path, fragment in (("/proc/version", "/proc/version: cannot be written"),
                           ("/dev/fd/987", "names file descriptor 987, which is not open"),
                           (str(parent), "is a folder, not a file")):
        assert_one_line_error(invoke("evaluate", tiny.export("bert"), "--task", f"topic={data}", "--json", path),
                              fragment)
