"""Everything an export folder holds is checked when `Predictor.load` reads it, not at the first prediction: each
graph against the size and sha256 the manifest records, the tokenizer against the encoder graph's vocabulary,
and every argument of `load`. One Predictor runs one export, even if the folder is republished while it runs."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mtl.artifacts.manifest import MANIFEST_FILE, load_manifest, with_file_digests
from mtl.errors import ConfigError, ManifestError, RuntimeLoadError
from mtl.runtime import Predictor
from mtl.runtime.tokenizer import TextEncoder
from tests.factory import MAX_LENGTH, TINY, VOCAB

TEXTS = ["the team won the game", "stocks fell sharply", "what a lovely film"]


def _refingerprint(folder: Path) -> None:
    """Record the folder's files as they are now, as a tool that rewrites an export would: the checks past the
    digests are then what refuses the folder."""
    with_file_digests(load_manifest(folder), folder).write(folder)


def _one_line(caught) -> str:
    text = str(caught.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- graphs: size, then sha256, against the manifest --------------------------------------------------------------


def test_a_truncated_graph_is_named_at_load_by_its_size():
    folder = TINY.copy_export()
    data = (folder / "model.int8.onnx").read_bytes()
    (folder / "model.int8.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(RuntimeLoadError) as caught:
        Predictor.load(folder, precision="int8")
    assert _one_line(caught) == (f"{folder / 'model.int8.onnx'}: {len(data) // 3:,} bytes, but the manifest records "
                                 f"{len(data):,}: the file is truncated or belongs to another export; export again")


def test_a_graph_changed_in_place_or_swapped_is_named_by_its_sha256():
    folder = TINY.copy_export()
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, same size: only the digest can tell
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(RuntimeLoadError, match=r"model.onnx: its sha256 is not the one the manifest records"):
        Predictor.load(folder, precision="fp32")
    # Another export's graph under this one's name (same architecture and size class): named too.
    shutil.copyfile(TINY.export("distilbert") / "model.onnx", folder / "model.onnx")
    with pytest.raises(RuntimeLoadError, match=r"model.onnx: .*(bytes, but the manifest records|sha256)"):
        Predictor.load(folder, precision="fp32")


def test_a_damaged_graph_of_the_variant_fails_the_load_even_if_only_embed_would_run_it():
    folder = TINY.copy_export()
    (folder / "encoder.onnx").write_bytes(b"\x00" * 10)
    with pytest.raises(RuntimeLoadError, match=r"encoder.onnx: 10 bytes, but the manifest records"):
        Predictor.load(folder, precision="fp32")  # fused: embed's encoder is checked at load all the same
    assert Predictor.load(folder, precision="int8", threads=1).predict(TEXTS)  # int8 has its own encoder


def test_a_manifest_older_than_the_digests_loads_unchecked_with_one_warning(caplog):
    folder = TINY.copy_export()
    data = json.loads((folder / MANIFEST_FILE).read_text())
    for key in ("files", "vocab_size", "max_positions"):
        del data[key]
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    want = Predictor.load(TINY.export("bert"), precision="fp32", threads=1).logits(TEXTS)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            got = Predictor.load(folder, precision="fp32", threads=1).logits(TEXTS)
    warnings = [r.getMessage() for r in caplog.records if "records no size and sha256" in r.getMessage()]
    assert len(warnings) == 1 and str(folder) in warnings[0]
    for task in want:
        np.testing.assert_array_equal(got[task], want[task])


# --- one Predictor, one model -------------------------------------------------------------------------------------


def _republish(source: Path, folder: Path) -> None:
    """Replace `folder` by a copy of `source` the way a publisher does: build beside it, then rename into place."""
    staging = folder.with_name(folder.name + ".new")
    shutil.copytree(source, staging)
    old = folder.with_name(folder.name + ".old")
    os.rename(folder, old)
    os.rename(staging, folder)
    shutil.rmtree(old)  # gone from the file system; what the predictor opened at load stays readable


@pytest.mark.parametrize("execution", ["fused", "split"])
def test_embed_and_predict_keep_the_model_loaded_when_the_folder_is_republished(execution):
    folder = TINY.copy_export("bert")
    original = Predictor.load(TINY.export("bert"), precision="fp32", execution=execution, threads=1)
    want_embed, want_logits = original.embed(TEXTS), original.logits(TEXTS)
    predictor = Predictor.load(folder, precision="fp32", execution=execution, threads=1)
    _republish(TINY.export("distilbert"), folder)  # another model, same tasks and sizes
    other = Predictor.load(folder, precision="fp32", execution=execution, threads=1).embed(TEXTS)
    assert np.abs(other - want_embed).max() > 1e-3  # the republished folder really holds another model
    np.testing.assert_allclose(predictor.embed(TEXTS), want_embed, atol=1e-6)  # a session opened after: the old one
    for task, logits in predictor.logits(TEXTS).items():
        np.testing.assert_allclose(logits, want_logits[task], atol=1e-6)


def test_a_graph_rewritten_in_place_after_load_is_named_when_its_session_opens():
    folder = TINY.copy_export("bert")
    predictor = Predictor.load(folder, precision="fp32", threads=1)  # fused: the encoder opens on first embed
    with open(folder / "encoder.onnx", "r+b") as handle:  # the same file, changed under the open handle
        handle.seek(100)
        handle.write(b"\xff" * 8)
    with pytest.raises(RuntimeLoadError, match=r"encoder.onnx: its sha256 is not the one the manifest records"):
        predictor.embed(TEXTS)
    assert predictor.predict(TEXTS)  # the fused session, opened at load, is unaffected


# --- the tokenizer fits the graph ---------------------------------------------------------------------------------


def _word_level(size: int) -> str:
    """A tokenizer of `size` whole-word tokens, as another model (BERT-base: 30522) would bring."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({f"w{i}": i for i in range(size)}, unk_token="w0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer.to_str()


def test_another_model_s_tokenizer_is_refused_at_load_naming_both_sizes():
    folder = TINY.copy_export()
    (folder / "tokenizer.json").write_text(_word_level(30522))
    with pytest.raises(RuntimeLoadError, match=r"tokenizer.json: .*bytes, but the manifest records"):
        Predictor.load(folder, precision="fp32")  # first, the digest: not the file that was exported
    _refingerprint(folder)
    with pytest.raises(RuntimeLoadError) as caught:
        Predictor.load(folder, precision="fp32")
    assert _one_line(caught).endswith(f"tokenizer.json: the tokenizer has ids up to 30,521, but the encoder graph "
                                      f"has {VOCAB} embedding rows (ids 0-{VOCAB - 1}): it is another model's "
                                      f"tokenizer")


def _tokenizer_json(change) -> bytes:
    data = json.loads((TINY.export("bert") / "tokenizer.json").read_text())
    change(data)
    return json.dumps(data).encode()


def _add_token(data: dict, token_id: int) -> None:
    data["added_tokens"].append({"id": token_id, "content": "<extra>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": True})


BAD_TOKENIZERS = {
    # a post-processor that names a special token it does not define: Rust panics on the first encode
    "panicking-template": (lambda d: d["post_processor"]["special_tokens"].pop("[SEP]"), "no entry found for key"),
    "invalid-regex": (lambda d: d.update(pre_tokenizer={"type": "Split", "pattern": {"Regex": "(unclosed"},
                                                        "behavior": "Isolated", "invert": False}),
                      "Oniguruma error: end pattern with unmatched parenthesis"),
    "missing-unknown-token": (lambda d: d["model"]["vocab"].pop("[UNK]"), "Missing [UNK] token"),
    "special-id-past-the-graph": (lambda d: d["post_processor"]["special_tokens"]["[CLS]"].update(ids=[10**9]),
                                  f"ids up to 1,000,000,000, but the encoder graph has {VOCAB} embedding rows"),
    "added-token-past-the-graph": (lambda d: _add_token(d, VOCAB), f"ids up to {VOCAB}, but the encoder graph"),
    "not-a-tokenizer": (lambda d: d.clear(), "not a readable tokenizer"),
}


@pytest.mark.parametrize("change, message", BAD_TOKENIZERS.values(), ids=BAD_TOKENIZERS.keys())
def test_a_bad_tokenizer_is_one_line_at_load(change, message, capfd):
    path = Path("export/tokenizer.json")
    with pytest.raises(RuntimeLoadError) as caught:
        TextEncoder.from_bytes(_tokenizer_json(change), path, MAX_LENGTH, 0, VOCAB)
    assert message in _one_line(caught) and _one_line(caught).startswith(f"{path}: ")
    assert "panicked" not in capfd.readouterr().err  # Rust's panic message is not printed around the error line


def test_the_pad_id_is_checked_against_the_graph_and_the_tokenizer():
    data = (TINY.export("bert") / "tokenizer.json").read_bytes()
    with pytest.raises(RuntimeLoadError, match=f"the padding id {VOCAB} is past the encoder graph's embedding rows"):
        TextEncoder.from_bytes(data, Path("tokenizer.json"), MAX_LENGTH, VOCAB, VOCAB)
    with pytest.raises(RuntimeLoadError, match=f"the padding id 5,000 is past the tokenizer's ids \\(0-{VOCAB - 1}\\)"):
        TextEncoder.from_bytes(data, Path("tokenizer.json"), MAX_LENGTH, 5000)  # graph size unknown: old manifest


def test_a_tokenizer_file_that_is_not_a_file_or_too_big(tmp_path, monkeypatch):
    import mtl.runtime.tokenizer as tokenizer

    os.mkfifo(tmp_path / "fifo.json")  # would block a plain open() until a writer came
    with pytest.raises(RuntimeLoadError, match="fifo.json: not a regular file"):
        TextEncoder.load(tmp_path / "fifo.json", MAX_LENGTH, 0)
    monkeypatch.setattr(tokenizer, "MAX_TOKENIZER_BYTES", 1000)
    with pytest.raises(RuntimeLoadError, match=r"tokenizer.json: .* more than the 1,000 this file may have"):
        TextEncoder.load(TINY.export("bert") / "tokenizer.json", MAX_LENGTH, 0)


@functools.lru_cache(maxsize=None)
def _real_tokenizer() -> dict:
    return json.loads((TINY.export("bert") / "tokenizer.json").read_text())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=5,
)


def _paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        if not (prefix == ("model",) and key == "vocab"):  # its 800 entries would drown every other path
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(draw=st.data())
def test_any_change_to_a_real_tokenizer_loads_or_is_one_runtime_load_error(draw):
    data = json.loads(json.dumps(_real_tokenizer()))
    *parents, last = draw.draw(st.sampled_from(list(_paths(data))))
    target = functools.reduce(lambda node, key: node[key], parents, data)
    if draw.draw(st.booleans()):
        del target[last]
    else:
        target[last] = draw.draw(json_values)
    try:
        encoder = TextEncoder.from_bytes(json.dumps(data).encode(), Path("tokenizer.json"), MAX_LENGTH, 0, VOCAB)
    except RuntimeLoadError as err:
        assert "\n" not in str(err)
        return
    # What loads encodes texts without a panic or an id the graph lacks.
    ids = [i for e in encoder.encode(TEXTS) for i in e.ids]
    assert ids and max(ids) < VOCAB  # the probe at load refuses a tokenizer that emits no token at all


@PROPERTY
@given(data=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_any_bytes_as_tokenizer_json_are_one_runtime_load_error(data):
    with pytest.raises(RuntimeLoadError) as caught:
        TextEncoder.from_bytes(data, Path("tokenizer.json"), MAX_LENGTH, 0, VOCAB)
    assert "\n" not in str(caught.value)


# --- every argument of Predictor.load ----------------------------------------------------------------------------

BAD_ARGUMENTS = {
    "threads-zero": ({"threads": 0}, "threads must be in [1, 4096], got 0"),
    "threads-negative": ({"threads": -1}, "threads must be in [1, 4096], got -1"),
    "threads-string": ({"threads": "2"}, "threads must be a whole number in [1, 4096], got '2'"),
    "threads-bool": ({"threads": True}, "threads must be a whole number in [1, 4096], got True"),
    "threads-float": ({"threads": 1.5}, "threads must be a whole number in [1, 4096], got 1.5"),
    "batch-size-zero": ({"batch_size": 0}, "batch size must be a whole number of at least 1, got 0"),
    "batch-size-bool": ({"batch_size": True}, "batch size must be a whole number of at least 1, got True"),
    "batch-size-string": ({"batch_size": "8"}, "batch size must be a whole number of at least 1, got '8'"),
    "precision-none": ({"precision": None}, "unknown precision None; valid: auto, fp32, int8, fp16"),
    "precision-list": ({"precision": ["fp32"]}, "unknown precision ['fp32']; valid: auto"),
    "device-number": ({"device": 3}, "unknown device 3; valid: cpu, cuda"),
    "execution-none": ({"execution": None}, "unknown execution None; valid: fused, split"),
    "graph-optimization-none": ({"graph_optimization": None}, "unknown graph optimization None; valid: basic"),
    "graph-optimization-list": ({"graph_optimization": ["all"]}, "unknown graph optimization ['all']"),
    "fallback-string": ({"fallback_cpu": "no"}, "fallback_cpu must be True or False, got 'no'"),
    "fallback-number": ({"fallback_cpu": 1}, "fallback_cpu must be True or False, got 1"),
    "folder-none": ({"folder": None}, "folder must be the path of an export folder (a str or Path), got None"),
    "folder-number": ({"folder": 3}, "folder must be the path of an export folder (a str or Path), got 3"),
    "folder-empty": ({"folder": ""}, "folder must be the path of an export folder (a str or Path), got ''"),
}


@pytest.mark.parametrize("arguments, message", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_every_bad_load_argument_is_a_config_error_naming_it(arguments, message):
    arguments = {"folder": TINY.export("bert"), **arguments}
    with pytest.raises(ConfigError) as caught:
        Predictor.load(**arguments)
    assert message in _one_line(caught)


def test_good_arguments_of_every_accepted_type_load():
    folder = TINY.export("bert")
    assert Predictor.load(str(folder), precision="fp32", threads=1, batch_size=1, fallback_cpu=False).predict(TEXTS)
    assert Predictor.load(folder, threads=None).threads >= 1  # None: every usable core


def test_a_manifest_that_names_a_fifo_is_refused_without_hanging():
    folder = TINY.copy_export()
    (folder / "model.onnx").unlink()
    os.mkfifo(folder / "model.onnx")
    with pytest.raises(ManifestError, match="names model.onnx, which is missing"):
        Predictor.load(folder, precision="fp32")


def test_export_refuses_a_tokenizer_that_does_not_fit_its_encoder(tmp_path):
    """The same rule at export, before any graph is written: a checkpoint that mixes two models is named."""
    from mtl.errors import ExportError
    from mtl.export.tokenizer import check_tokenizer, write_tokenizer
    from tests.factory import build_tokenizer

    tokenizer = build_tokenizer("bert")
    check_tokenizer(tokenizer, VOCAB)  # its own encoder's size: fine
    with pytest.raises(ExportError, match=f"has {VOCAB} tokens \\(padding id 0\\), but its encoder has 100 "
                                          f"embedding rows: the tokenizer is another model's"):
        check_tokenizer(tokenizer, 100)
    assert write_tokenizer(tokenizer, tmp_path, MAX_LENGTH) == 0  # written, then loaded as the runtime will
    assert TextEncoder.load(tmp_path / "tokenizer.json", MAX_LENGTH, 0, VOCAB).encode(TEXTS)
