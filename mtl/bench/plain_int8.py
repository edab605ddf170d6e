"""The export folder the bench's "ort-int8-plain" backend reads: the export with its int8 variant rebuilt the way
exports built it before attention fusion (`mtl.export.variants.quantize_int8` of the fp32 encoder and fused graph,
with the export's own int8 settings, and no session config). Built by the bench's parent process, so that one run
compares the two int8 recipes on the same model, and the worker's load time and peak RSS are the graph's alone.
Needs onnx (the quantiser reads the graphs with it); no torch.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from mtl.artifacts.io_spec import ENCODER_GRAPH, FUSED_GRAPH
from mtl.artifacts.manifest import ENCODER_CONFIG_FILE, Variant, VariantFiles, load_manifest, with_file_digests
from mtl.errors import BenchError


def plain_int8_export(export: Path, target: Path) -> Path:
    """Write the folder at `target` (new) and return it: the export's tokenizer, encoder config and fp32 graphs
    linked (copied where links cannot be made), and an int8 variant quantised from those fp32 graphs."""
    from mtl.export.variants import PLAIN, Int8Settings, quantize_int8

    manifest = load_manifest(export)
    fp32, int8 = manifest.variants["fp32"], manifest.variants.get("int8")
    if int8 is None:
        raise BenchError(f"{export} has no int8 variant, whose settings int8-plain takes")
    try:
        settings = Int8Settings(**int8.settings["quantization"])
    except (KeyError, TypeError):
        raise BenchError(f"{export}: the int8 variant records no usable quantization settings") from None
    target.mkdir(parents=True)
    extra = [ENCODER_CONFIG_FILE] if (export / ENCODER_CONFIG_FILE).is_file() else []
    for name in dict.fromkeys([manifest.tokenizer, *extra, *fp32.files.all()]):
        _link_or_copy(export / name, target / name)
    files = VariantFiles(_plain_name(fp32.files.encoder), _plain_name(fp32.files.model), dict(fp32.files.heads))
    for source, built in ((fp32.files.encoder, files.encoder), (fp32.files.model, files.model)):
        quantize_int8(export / source, target / built, settings)
    plain = Variant("int8", files, int8.device, {"quantization": settings.to_dict(),
                                                 "recipe": {ENCODER_GRAPH: PLAIN, FUSED_GRAPH: PLAIN}})
    with_file_digests(replace(manifest, variants={"fp32": fp32, "int8": plain}), target).write(target)
    return target


def _plain_name(fp32_file: str) -> str:
    return fp32_file.removesuffix(".onnx") + ".int8-plain.onnx"


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(source.resolve(), target)
    except OSError:  # Windows without the symlink privilege
        shutil.copyfile(source, target)
