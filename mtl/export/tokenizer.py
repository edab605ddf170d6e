"""The tokenizer files of an export folder: `tokenizer.json` as the runtime reads it (truncation to the model's max
length, right padding), beside the Hugging Face tokenizer files so that AutoTokenizer and Optimum read the folder."""

from __future__ import annotations

from pathlib import Path

from mtl.artifacts.manifest import TOKENIZER_FILE
from mtl.errors import ExportError, RuntimeLoadError
from mtl.runtime.tokenizer import TextEncoder


def write_tokenizer(tokenizer, folder: Path, max_length: int) -> int:
    """tokenizer.json with truncation to the model's max length and right padding set, plus the Hugging Face
    tokenizer files (so AutoTokenizer and Optimum read the folder too). Returns the padding id."""
    from tokenizers import Tokenizer

    check_tokenizer(tokenizer)
    tokenizer.model_max_length = max_length
    tokenizer.padding_side = "right"  # what the graphs were validated with
    tokenizer.save_pretrained(str(folder))
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())  # a copy: the caller's stays as it was
    backend.enable_truncation(max_length)
    backend.enable_padding(direction="right", pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token,
                           pad_type_id=tokenizer.pad_token_type_id)
    backend.save(str(folder / TOKENIZER_FILE))
    try:  # what the runtime will refuse at load is refused now, before the export counts as done
        TextEncoder.load(folder / TOKENIZER_FILE, max_length, int(tokenizer.pad_token_id))
    except RuntimeLoadError as err:
        raise ExportError(f"the checkpoint's tokenizer cannot run in the runtime ({err})") from None
    return int(tokenizer.pad_token_id)


def check_tokenizer(tokenizer, vocab_size: int | None = None) -> None:
    """A fast tokenizer with a padding token whose ids (`vocab_size`: the encoder's embedding rows) all fit."""
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"the checkpoint's tokenizer ({type(tokenizer).__name__}) has no fast version "
                          f"(tokenizer.json), which the runtime needs")
    if tokenizer.pad_token_id is None:
        raise ExportError("the checkpoint's tokenizer has no padding token; batches could not be padded")
    if vocab_size is not None and max(len(tokenizer), tokenizer.pad_token_id + 1) > vocab_size:
        raise ExportError(f"the checkpoint's tokenizer has {len(tokenizer):,} tokens (padding id "
                          f"{tokenizer.pad_token_id}), but its encoder has {vocab_size:,} embedding rows: the "
                          f"tokenizer is another model's")
