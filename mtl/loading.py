"""Checks on a model folder someone else made, run while it loads and before anything is built from it: no Python
from the folder (transformers runs a folder's `auto_map` code only with `trust_remote_code`, and asks on stdin when
that is left unset), weights whose names, shapes and dtypes are exactly those of the model they must fill, sizes
that the weights on disk actually hold, and a tokenizer whose ids fit the encoder's embedding matrix."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from mtl.errors import UserError

TRUST_OPTION = "--trust-remote-code"
# Weight files `AutoModel.from_pretrained` reads from a folder (single or sharded).
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# Most problems named in one error; the count says how many more there were.
SHOWN_PROBLEMS = 8


@contextlib.contextmanager
def remote_code_refused(folder: Path | str, error: type[UserError]) -> Iterator[None]:
    """A transformers load that fails because the folder's config names its own Python code (`auto_map`) becomes
    one `error` naming the option that allows it; nothing from the folder has run."""
    try:
        yield
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise error(f"{folder}: loading it needs Python code from the folder itself (its config has an auto_map); "
                    f"mtl-onnx never runs a folder's code unless you pass {TRUST_OPTION}, and only do that for a "
                    f"folder whose code you have read") from None


def expected_state(model) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) of every tensor the model's weights file must hold (the loss's training state is not
    saved with the model). Works on a model built on the meta device: nothing is allocated."""
    return {name: spec for name, spec in tensor_specs(model.state_dict()).items() if not name.startswith("loss.")}


def tensor_specs(state: Mapping, prefix: str = "") -> dict[str, tuple[tuple[int, ...], str]]:
    return {f"{prefix}{name}": (tuple(value.shape), str(value.dtype).removeprefix("torch."))
            for name, value in state.items()}


def weight_problems(path: Path, expected: Mapping[str, tuple[tuple[int, ...], str]]) -> list[str]:
    """Every difference between the safetensors header of `path` and `expected`: missing and unexpected names,
    wrong shapes and dtypes. Reads the header only; a file that is not safetensors, or is truncated, is one problem."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as weights:
            found = {name: (tuple(weights.get_slice(name).get_shape()), weights.get_slice(name).get_dtype())
                     for name in weights.keys()}
    except (SafetensorError, OSError) as err:
        return [f"not a complete safetensors file ({str(err).splitlines()[0]})"]
    problems = [f"missing {name}" for name in expected if name not in found]
    problems += [f"unexpected {name}" for name in found if name not in expected]
    for name, (shape, dtype) in expected.items():
        if name not in found:
            continue
        got_shape, got_dtype = found[name]
        if got_shape != shape:
            problems.append(f"{name} has shape {list(got_shape)}, the config makes it {list(shape)}"
                            f"{_head_hint(name, shape)}")
        if _DTYPES.get(got_dtype, got_dtype) != dtype:
            problems.append(f"{name} is {_DTYPES.get(got_dtype, got_dtype)}, expected {dtype}")
    return problems


# safetensors' dtype names -> torch's
_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
           "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn",
           "F8_E5M2": "float8_e5m2"}
_HEAD_OUTPUT = re.compile(r"heads\.(.+)\.3\.(weight|bias)")


def _head_hint(name: str, shape: tuple[int, ...]) -> str:
    match = _HEAD_OUTPUT.fullmatch(name)
    return f" (config.json gives task {match.group(1)} {shape[0]} labels)" if match else ""


def describe(problems: list[str]) -> str:
    shown = "; ".join(problems[:SHOWN_PROBLEMS])
    more = len(problems) - SHOWN_PROBLEMS
    return shown + (f"; and {more} more" if more > 0 else "")


def weight_bytes(folder: Path) -> int:
    """Bytes of the weight files in a model folder (every shard)."""
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())


def tokenizer_problems(tokenizer, vocab_rows: int) -> list[str]:
    """Ids the tokenizer can emit that the encoder's embedding matrix (`vocab_rows` rows) has no row for, and a
    missing or out-of-range padding id: each would fail (or read another token's row) at the first prediction."""
    problems = []
    vocab = tokenizer.get_vocab()
    largest = max(vocab.values(), default=-1)
    if largest >= vocab_rows or len(vocab) > vocab_rows:
        problems.append(f"the tokenizer has {len(vocab)} tokens with ids up to {largest}, but the encoder's "
                        f"embedding matrix has {vocab_rows} rows (another model's tokenizer?)")
    pad = tokenizer.pad_token_id
    if pad is None:
        problems.append("the tokenizer has no padding token")
    elif not 0 <= pad < vocab_rows:
        problems.append(f"the padding id {pad} is outside the encoder's {vocab_rows} embedding rows")
    special = sorted({i for i in tokenizer.all_special_ids if i is not None and not 0 <= i < vocab_rows})
    if special:
        problems.append(f"special token ids {special} are outside the encoder's {vocab_rows} embedding rows")
    return problems
