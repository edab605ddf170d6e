"""The int8 recipe: attention fused, then quantised (Attention -> QAttention), run with ORT's SkipLayerNormalization
fusion off; the manifest records the recipe and the session config; the graph computes what the previous recipe
(plain quantisation) did and passes the export's validation; DeBERTa, whose relative attention does not fuse, falls
back to plain quantisation and still runs; Triton's config says the setting it cannot carry."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from mtl.artifacts.io_spec import ENCODER_GRAPH, FUSED_GRAPH
from mtl.artifacts.manifest import load_manifest
from mtl.export.variants import ATTENTION_FUSED, ATTENTION_FUSED_SESSION_CONFIG, PLAIN, build_int8, int8_settings
from mtl.runtime import Predictor
from tests.factory import assert_int8_close

TEXTS = ["the movie was great", "stocks rally as the bank cuts rates and the market won " * 3, "team lost the game",
         "nasa space computer software phone election president minister war peace science " * 10, "a"]
BOTH_GRAPHS = {ENCODER_GRAPH: ATTENTION_FUSED, FUSED_GRAPH: ATTENTION_FUSED}


def _ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node)


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_bert_style_int8_fuses_attention_then_quantises_and_records_it(tiny, arch):
    # Without --optimize: the fusion is int8's own, not inherited from a fused fp32 graph.
    folder = tiny.export(arch, ("fp32", "int8"), optimize=False)
    int8 = load_manifest(folder).variants["int8"]
    assert int8.settings["recipe"] == BOTH_GRAPHS
    assert int8.session_config == ATTENTION_FUSED_SESSION_CONFIG
    assert int8.validation.parity.passed is True  # validated against PyTorch, with that session config
    for file in (int8.files.encoder, int8.files.model):
        ops = _ops(folder / file)
        assert ops["QAttention"] == 2 and ops["Attention"] == 0  # one per layer, quantised
        assert ops["SkipLayerNormalization"] == ops["EmbedLayerNormalization"] == 0  # fusions measured slower
    assert sorted(p.name for p in folder.glob("*.onnx")) == ["encoder.int8.onnx", "encoder.onnx", "model.int8.onnx",
                                                             "model.onnx"]  # no intermediate graph left


def test_fused_int8_computes_what_plain_int8_does_and_stays_close_to_fp32(tiny):
    """The same quantised weights either way: the fusion rearranges the attention arithmetic, no more."""
    from mtl.bench.plain_int8 import plain_int8_export

    folder = tiny.export("bert", ("fp32", "int8"), optimize=False)
    plain = plain_int8_export(folder, tiny.scratch("plain-int8") / "onnx")
    fp32 = Predictor.load(folder, precision="fp32", threads=1).logits(TEXTS)
    for execution in ("fused", "split"):
        fused = Predictor.load(folder, precision="int8", threads=1, execution=execution).logits(TEXTS)
        previous = Predictor.load(plain, precision="int8", threads=1, execution=execution).logits(TEXTS)
        for task, values in fp32.items():
            assert_int8_close(fused[task], previous[task])
            assert np.abs(fused[task] - values).max() < 0.05 * np.abs(values).max()
            assert (fused[task].argmax(-1) == values.argmax(-1)).all()


def test_an_export_made_with_optimize_keeps_its_fusions_and_gets_the_same_recipe(tiny):
    folder = tiny.export("bert")  # the standard export: --optimize (kept where faster), fp32 + int8 + fp16
    manifest = load_manifest(folder)
    int8 = manifest.variants["int8"]
    assert int8.settings["recipe"] == BOTH_GRAPHS and int8.session_config == ATTENTION_FUSED_SESSION_CONFIG
    assert _ops(folder / int8.files.model)["QAttention"] == 2
    assert manifest.variants["fp32"].session_config == manifest.variants["fp16"].session_config == {}


@pytest.mark.parametrize("arch", ["deberta-v2", "deberta-v3"])
def test_deberta_falls_back_to_plain_quantisation_and_still_runs(tiny, arch):
    folder = tiny.export(arch)
    int8 = load_manifest(folder).variants["int8"]
    assert int8.settings["recipe"] == {ENCODER_GRAPH: PLAIN, FUSED_GRAPH: PLAIN}
    assert int8.session_config == {} and int8.validation.parity.passed is True
    ops = _ops(folder / int8.files.model)
    assert ops["QAttention"] == ops["Attention"] == 0 and ops["MatMulInteger"] > 0
    fp32 = Predictor.load(folder, precision="fp32", threads=1).logits(TEXTS)
    quantised = Predictor.load(folder, precision="int8", threads=1).logits(TEXTS)
    for task, values in fp32.items():
        assert np.abs(quantised[task] - values).max() < 0.05 * np.abs(values).max()


def test_build_int8_falls_back_where_the_fusion_finds_no_attention(tiny, monkeypatch):
    """Whatever the architecture: no Attention node after the fusion means the graph as it is, quantised."""
    import mtl.export.variants as variants

    source = tiny.export("bert", ("fp32", "int8"), optimize=False) / "encoder.onnx"
    monkeypatch.setattr(variants, "fuse_attention", lambda *args: 0)
    target = tiny.scratch("fallback") / "encoder.int8.onnx"
    built = build_int8(source, target, int8_settings(), num_heads=2, hidden_size=32)
    assert (built.recipe, built.session_config) == (PLAIN, {})
    assert _ops(target)["QAttention"] == 0 and _ops(target)["MatMulInteger"] > 0
    assert [p.name for p in target.parent.iterdir()] == [target.name]


def test_triton_config_says_the_session_config_it_cannot_carry(tiny):
    """Triton's ONNX Runtime backend passes no such entry to ORT: the config says so, and stays valid."""
    pytest.importorskip("tritonclient.grpc")
    from mtl.export.triton import CONFIG_FILE, write_triton_repository

    model_dir = write_triton_repository(tiny.export("bert"), tiny.scratch("triton") / "models", precision="int8")
    config = (model_dir / CONFIG_FILE).read_text()
    header = [line for line in config.splitlines() if line.startswith("#")]
    assert any("optimization.disable_specified_optimizers=SkipLayerNormFusion" in line for line in header)
    assert "disable_specified_optimizers" not in "".join(line for line in config.splitlines() if line[:1] != "#")
    fp32 = write_triton_repository(tiny.export("bert"), tiny.scratch("triton") / "models", precision="fp32")
    assert "disable_specified_optimizers" not in (fp32 / CONFIG_FILE).read_text()
