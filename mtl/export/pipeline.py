"""`export_checkpoint`: checkpoint -> validated export folder. Every input is checked before any work; the graphs
are written to a staging folder beside the output, validated, and renamed into place only when everything passed,
so the output is either a complete export or untouched."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from mtl.artifacts.checkpoint import check_checkpoint, read_model_config
from mtl.artifacts.encoder_config import position_limit
from mtl.artifacts.environment import library_versions, usable_cores
from mtl.artifacts.io_spec import ENCODER_GRAPH, FUSED_GRAPH, HEAD_GRAPH, encoder_spec, fused_spec, head_spec
from mtl.artifacts.manifest import (
    CHECK_INT8_HINT,
    VARIANT_DEVICE,
    Manifest,
    Variant,
    VariantFiles,
    is_export_folder,
    load_manifest,
    with_file_digests,
)
from mtl.artifacts.publish import check_target, claimed, staged
from mtl.artifacts.validation import (
    CHECKED,
    FORCED,
    UNCHECKED,
    Int8Limits,
    LabelledFigures,
    ParityFigures,
    ValidationRecord,
)
from mtl.config import ModelConfig
from mtl.errors import CheckpointError, DeviceUnavailableError, ExportError, ExportValidationError, UserError
from mtl.export.accuracy import accuracy_report, drop_points, int8_problems, labelled_data
from mtl.export.graphs import export_fp32_graphs, variant_file
from mtl.export.options import ExportOptions
from mtl.export.tokenizer import check_tokenizer, write_tokenizer
from mtl.export.validate import (
    TOLERANCES,
    TokenSource,
    check_variant,
    example_inputs,
    sequence_lengths,
    torch_references,
    validation_cases,
)
from mtl.export.variants import Int8Settings, build_int8, convert_fp16, int8_settings, optimize_if_faster

log = logging.getLogger(__name__)

StepCallback = Callable[[str, float], None]


@dataclass
class GraphRow:
    """One file of the export, for the summary table."""

    graph: str
    precision: str
    file: str
    size_bytes: int
    max_abs_diff: float | None
    shared: bool  # the same file as an earlier variant's


@dataclass
class ExportResult:
    output: Path
    manifest: Manifest
    rows: list[GraphRow]
    notes: list[str]
    seconds: float


class _Steps:
    def __init__(self, callback: StepCallback | None):
        self.callback = callback

    @contextlib.contextmanager
    def __call__(self, message: str):
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        log.debug("%s (%.1f s)", message, elapsed)  # the CLI shows steps through the callback
        if self.callback:
            self.callback(message, elapsed)


def export_checkpoint(checkpoint: Path, output: Path, options: ExportOptions | None = None,
                      on_step: StepCallback | None = None) -> ExportResult:
    started = time.perf_counter()
    options = (options or ExportOptions()).checked()
    output = Path(output)
    check_target(output, "export", is_export_folder, options.overwrite, ExportError,
                 inputs=[checkpoint, *options.validation_data.values()])
    with claimed(output):  # a second export into the same folder is refused now, not overwritten at the end
        folder = check_checkpoint(checkpoint)
        config = read_model_config(folder)
        data, data_files, data_notes = labelled_data(folder, config, options.validation_data, options.text_field,
                                                     options.label_field, options.recorded_data)
        int8 = int8_settings(options.int8_target, options.per_channel) if "int8" in options.precisions else None
        threads = options.threads or usable_cores()
        steps = _Steps(on_step)
        with steps("loaded the checkpoint"):
            model, tokenizer = _load_model(folder, threads, options.trust_remote_code)
        check_tokenizer(tokenizer, model.encoder.backbone.config.vocab_size)
        with staged(output) as staging:
            manifest, notes = _build(model, tokenizer, config, staging, options, int8, (data, data_files),
                                     threads, steps)
    notes = data_notes + notes
    return ExportResult(output, manifest, _rows(output, manifest), notes, time.perf_counter() - started)


def _load_model(folder: Path, threads: int, trust_remote_code: bool = False):
    import torch

    from mtl.model import load_checkpoint

    torch.set_num_threads(threads)  # ORT sessions get the same count: the two share the process's cores
    try:
        model, tokenizer = load_checkpoint(folder, trust_remote_code, fusable_attention())
    except UserError:
        raise
    except Exception as err:  # any other unreadable file in the checkpoint: the user's file, not our bug
        detail = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{folder}: the checkpoint cannot be loaded ({detail})") from None
    return model.eval(), tokenizer


def fusable_attention() -> str | None:
    """The attention whose traced graph ONNX Runtime's transformer optimizer fuses into Attention nodes (which the int8
    recipe quantises); None is the library's default. Where encoders build their masks with masking_utils'
    `create_bidirectional_mask` (transformers 5) only eager attention is matched: tiny BERT gave 2 Attention nodes
    eager, 0 SDPA. Before that (4.57) the default SDPA graphs of BERT, RoBERTa and DistilBERT fuse, and DistilBERT's
    eager one does not. Every architecture has eager attention."""
    from transformers import masking_utils

    return "eager" if hasattr(masking_utils, "create_bidirectional_mask") else None


def _graph_specs(model, config: ModelConfig) -> dict:
    hidden = model.encoder.hidden_size
    tasks = [(t.name, len(t.labels)) for t in config.tasks]
    names = graph_input_names(config, model.encoder.backbone.config)
    return {
        ENCODER_GRAPH: encoder_spec(names, hidden),
        FUSED_GRAPH: fused_spec(names, tasks),
        HEAD_GRAPH: {name: head_spec(name, hidden, n) for name, n in tasks},
    }


def graph_input_names(config: ModelConfig, backbone_config) -> list[str]:
    """The checkpoint's input names, less token_type_ids where the encoder has no token-type embedding
    (DeBERTa-v3: type_vocab_size 0): its forward accepts them but ignores them, so the exporter drops the input
    from the graph, and the runtime must not be asked to feed it."""
    names = list(config.input_names)
    if "token_type_ids" in names and getattr(backbone_config, "type_vocab_size", 1) == 0:
        names.remove("token_type_ids")
    return names


def _build(model, tokenizer, config: ModelConfig, staging: Path, options: ExportOptions,
           int8: Int8Settings | None, data: tuple, threads: int, steps: _Steps) -> tuple[Manifest, list[str]]:
    specs = _graph_specs(model, config)
    backbone = model.encoder.backbone.config
    source = TokenSource(specs[ENCODER_GRAPH].input_names, backbone.vocab_size, int(tokenizer.pad_token_id),
                         getattr(backbone, "type_vocab_size", 0) or 0)
    with steps(f"exported encoder, {len(config.tasks)} head(s) and the fused graph"):
        fp32 = export_fp32_graphs(model, specs, staging, example_inputs(source, config.max_length), options.opset)
    cases = validation_cases(source, config.max_length)
    settings: dict[str, dict] = {"fp32": {}}
    if options.optimize:
        with steps("optimized (kept only where faster)"):
            # Timed on batch 8 at the medium length: a serving-sized batch that keeps the timing short.
            lengths = sequence_lengths(config.max_length)
            timing = next(c for c in cases if c["input_ids"].shape == (8, lengths[len(lengths) // 2]))
            settings["fp32"]["optimization"] = _optimize(model, specs, staging, fp32, timing, threads)
    files = {"fp32": fp32}
    session_configs: dict[str, dict[str, str]] = {}
    if int8 is not None:
        with steps(f"quantized to int8 ({int8.target}, per-channel {int8.per_channel})"):
            files["int8"], recipes, session_configs["int8"] = _make_int8(model, staging, fp32, int8)
        settings["int8"] = {"quantization": int8.to_dict(), "recipe": recipes}
    if "fp16" in options.precisions:
        with steps("converted to fp16 (float32 inputs and outputs)"):
            files["fp16"] = _make_fp16(staging, fp32)
    parity = _validate(model, specs, staging, files, session_configs, cases, threads, steps)
    with steps("wrote tokenizer.json and config.json"):
        pad_id = write_tokenizer(tokenizer, staging, config.max_length)
        backbone.save_pretrained(str(staging))  # config.json: the encoder's, as Hugging Face tools expect
    manifest = _manifest(model, config, specs, files, settings, session_configs, parity, options.opset, pad_id)
    manifest = with_file_digests(manifest, staging)  # the files are final: what the runtime checks at load
    notes = []
    examples, data_files = data
    if examples:
        with steps(f"checked {', '.join(files)} on {', '.join(map(str, data_files.values()))}"):
            manifest = _check_real_data(manifest, staging, examples, data_files, options, threads)
    elif int8 is not None:
        notes.append(f"int8 was not checked on labelled data, so `--precision auto` runs fp32 ({CHECK_INT8_HINT})")
    manifest.write(staging)  # once, complete: nothing reads a manifest that a later step would still change
    load_manifest(staging)  # and it reads back as the runtime will read it, before the folder is published
    return manifest, notes


def _attention_dims(model) -> tuple[int, int]:
    """(heads, hidden size) of the encoder's attention, as ORT's transformer fusions need them."""
    backbone = model.encoder.backbone.config
    heads = getattr(backbone, "num_attention_heads", None) or getattr(backbone, "n_heads", 0)
    return heads, model.encoder.hidden_size


def _optimize(model, specs, staging: Path, fp32: VariantFiles, feeds, threads: int) -> dict:
    heads, hidden = _attention_dims(model)
    return {
        graph: optimize_if_faster(staging / file, specs[graph], feeds, heads, hidden, threads)
        for graph, file in ((ENCODER_GRAPH, fp32.encoder), (FUSED_GRAPH, fp32.model))
    }


def _make_int8(model, staging: Path, fp32: VariantFiles,
               settings: Int8Settings) -> tuple[VariantFiles, dict[str, str], dict[str, str]]:
    """Encoder and fused graph quantised (attention fused first where it can be, see `build_int8`), heads kept in
    float (see `quantize_int8`): the int8 variant shares the fp32 head files, and split execution computes exactly
    what the fused graph does. Returns the files, each graph's recipe, and the variant's session config."""
    heads, hidden = _attention_dims(model)
    recipes, session_config = {}, {}
    for graph, file in ((ENCODER_GRAPH, fp32.encoder), (FUSED_GRAPH, fp32.model)):
        built = build_int8(staging / file, staging / variant_file(file, "int8"), settings, heads, hidden)
        recipes[graph] = built.recipe
        # One config for the variant's sessions. The two graphs share their encoder, so they get one recipe; were
        # they to differ, the setting is still right for a plain graph (it only keeps a fusion out).
        session_config.update(built.session_config)
    files = VariantFiles(variant_file(fp32.encoder, "int8"), variant_file(fp32.model, "int8"), dict(fp32.heads))
    return files, recipes, session_config


def _make_fp16(staging: Path, fp32: VariantFiles) -> VariantFiles:
    return _derive(staging, fp32, "fp16", convert_fp16)


def _derive(staging: Path, fp32: VariantFiles, precision: str, convert) -> VariantFiles:
    for file in fp32.all():
        convert(staging / file, staging / variant_file(file, precision))
    return VariantFiles(variant_file(fp32.encoder, precision), variant_file(fp32.model, precision),
                        {t: variant_file(f, precision) for t, f in fp32.heads.items()})


def _validate(model, specs, staging: Path, files: dict[str, VariantFiles], session_configs: dict[str, dict],
              cases, threads: int, steps: _Steps) -> dict[str, ParityFigures]:
    references = torch_references(model, cases, specs[ENCODER_GRAPH].input_names)
    parity, mismatches = {}, []
    for precision, variant in files.items():
        device, session_config = _validation_device(precision), session_configs.get(precision)
        with steps(f"validated {precision} against PyTorch on {len(cases)} shapes ({device})"):
            try:
                figures, problems = check_variant(staging, variant, specs, cases, references,
                                                  TOLERANCES[precision], threads, device, session_config)
            except DeviceUnavailableError:
                figures, problems = check_variant(staging, variant, specs, cases, references,
                                                  TOLERANCES[precision], threads, "cpu", session_config)
        parity[precision] = figures
        mismatches += problems
    if mismatches:
        shown = mismatches[:40] + ([f"... and {len(mismatches) - 40} more"] if len(mismatches) > 40 else [])
        raise ExportValidationError(
            f"{len(mismatches)} output(s) of the exported graphs do not match PyTorch; nothing was written:\n  "
            + "\n  ".join(shown)
        )
    return parity


def _validation_device(precision: str) -> str:
    """fp16 is validated where it will run when this machine has a GPU and ONNX Runtime a CUDA provider; ORT's CPU
    provider runs it too (casting around the fp16 kernels it lacks), so it is validated everywhere. A CUDA build
    of onnxruntime without a GPU (the gpu image run without --gpus) validates on CPU."""
    if precision != "fp16":
        return "cpu"
    import torch

    from mtl.runtime.cuda import has_cuda_provider

    return "cuda" if has_cuda_provider() and torch.cuda.is_available() else "cpu"


def _manifest(model, config: ModelConfig, specs, files, settings, session_configs,
              parity: dict[str, ParityFigures], opset: int, pad_id: int) -> Manifest:
    """The manifest of the files in staging as they stand after the checks against PyTorch; an int8 variant is
    unchecked until `_check_real_data` judges it on labelled data."""
    validation = {p: ValidationRecord(parity[p], status=UNCHECKED if p == "int8" else None) for p in files}
    return Manifest(
        model=replace(config, input_names=tuple(specs[ENCODER_GRAPH].input_names)),
        hidden_size=model.encoder.hidden_size, opset=opset,
        pad_token_id=pad_id, encoder=specs[ENCODER_GRAPH], fused=specs[FUSED_GRAPH], heads=specs[HEAD_GRAPH],
        variants={p: Variant(p, f, VARIANT_DEVICE[p], settings.get(p, {}), validation[p], session_configs.get(p, {}))
                  for p, f in files.items()},
        model_type=model.encoder.backbone.config.model_type, versions=library_versions(),
        vocab_size=model.encoder.backbone.config.vocab_size,
        max_positions=position_limit(model.encoder.backbone.config.to_dict()),
    )


def _check_real_data(manifest: Manifest, staging: Path, data: dict, files: dict[str, Path], options: ExportOptions,
                     threads: int) -> Manifest:
    report = accuracy_report(staging, manifest, data, threads)
    limits = Int8Limits(options.max_int8_drop, options.max_int8_f1_drop)
    problems = int8_problems(report, limits) if "int8" in manifest.variants else []
    if problems and not options.force_int8:
        raise ExportValidationError(
            "int8 loses too much on the validation data; nothing was written (export without int8, raise "
            "--max-int8-drop / --max-int8-f1-drop, or pass --force-int8):\n  " + "\n  ".join(problems)
        )
    variants = {}
    for precision, variant in manifest.variants.items():
        real = {task: _labelled_figures(figures, precision) for task, figures in report.items()}
        validation = replace(variant.validation, real_data=real, data={t: str(f) for t, f in files.items()})
        if precision == "int8":
            validation = replace(validation, status=FORCED if problems else CHECKED, limits=limits)
        variants[precision] = replace(variant, validation=validation)
    return replace(manifest, variants=variants)


def _labelled_figures(figures: dict, precision: str) -> LabelledFigures:
    """One task's entry of `accuracy_report` as the manifest records it for `precision`."""
    if precision == "fp32":
        return LabelledFigures(figures["examples"], **figures["metrics"]["fp32"])
    return LabelledFigures(figures["examples"], **figures["metrics"][precision], fp32=figures["metrics"]["fp32"],
                           drop_points=drop_points(figures, precision),
                           agreement_with_fp32=figures["agreement_with_fp32"][precision])


def _rows(output: Path, manifest: Manifest) -> list[GraphRow]:
    rows, seen = [], set()
    for precision, variant in manifest.variants.items():
        parity = variant.validation.parity
        diffs = parity.max_abs_diff if parity is not None else {}
        graphs = [(ENCODER_GRAPH, variant.files.encoder, diffs.get(ENCODER_GRAPH))]
        graphs += [(f"{HEAD_GRAPH}/{t}", f, diffs.get(f"{HEAD_GRAPH}/{t}")) for t, f in variant.files.heads.items()]
        fused = [v for k, v in diffs.items() if k.startswith(f"{FUSED_GRAPH}:")]
        graphs.append((FUSED_GRAPH, variant.files.model, max(fused) if fused else None))
        for graph, file, diff in graphs:
            rows.append(GraphRow(graph, precision, file, (output / file).stat().st_size, diff, file in seen))
            seen.add(file)
    return rows
