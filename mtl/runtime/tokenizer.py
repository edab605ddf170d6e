"""Text to padded token arrays with the `tokenizers` library only (no transformers)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from mtl.data.files import check_texts
from mtl.errors import RuntimeLoadError
from mtl.runtime.files import PinnedFile
from mtl.text import PROBE_TEXT

MAX_TOKENIZER_BYTES = 100 * 1024 * 1024  # the largest real ones (multilingual, 250k tokens) are about 17 MB

# A text longer than this many characters per kept token is tokenized from a prefix first (see `_encode_long`).
CHARS_PER_TOKEN = 32
# ... and never from more than this many characters per kept token (32 K characters for 128 tokens): real text has
# about 4 to 6 characters a token, so this only cuts what no tokenizer reads in full in bounded time.
MAX_CHARS_PER_TOKEN = 256
# Only a plain space: every whitespace pre-tokenizer splits there and no normalizer drops it. Other `\s` characters
# (form feed, U+001C-U+001F, U+0085) are control characters that BERT's normalizer deletes, joining the words
# around them, so a cut there would split what the full text tokenizes as one word.
_LAST_SPACE = re.compile(r" (?=[^ ]*$)")


@contextlib.contextmanager
def _rust_panics_unprinted():
    """Standard error (file descriptor 2) sent to /dev/null for the block: Rust's panic hook writes its own
    lines there before the panic reaches Python as an exception, and the error is to be one line. Only around
    the load-time probe, which runs before any work whose messages could be lost."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no standard error at all: nothing to keep clean
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _largest_id(tokenizer: Tokenizer) -> int:
    """The largest id of the tokenizer's vocabulary and added tokens. Ids are 0..size-1 in every real tokenizer,
    which one lookup per id confirms (17 ms for 30,522 ids, no memory); only a file with gaps in its ids pays
    for `get_vocab`, a copy of every token (+6.6 MiB peak RSS for MiniLM's)."""
    size = tokenizer.get_vocab_size(with_added_tokens=False)  # with them, tokenizers copies the whole vocabulary
    if all(tokenizer.id_to_token(i) is not None for i in range(size)):
        return max([size - 1, *tokenizer.get_added_tokens_decoder()])
    return max(tokenizer.get_vocab(with_added_tokens=True).values(), default=-1)


class TextEncoder:
    """Tokenizes with truncation to the model's max length; pads each batch to its own longest row."""

    def __init__(self, tokenizer: Tokenizer, max_length: int, pad_token_id: int):
        # Truncation comes from the manifest, whatever tokenizer.json says; padding is done per batch below
        # (numpy, after length sorting), so the tokenizer's own padding is switched off. Both are set once here,
        # never per call, so that concurrent callers share one immutable tokenizer.
        tokenizer.enable_truncation(max_length)
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_token_id = pad_token_id

    @classmethod
    def load(cls, path: Path, max_length: int, pad_token_id: int, vocab_size: int = 0) -> TextEncoder:
        """The tokenizer.json at `path`, checked as `from_bytes` does."""
        with PinnedFile(path, None, MAX_TOKENIZER_BYTES) as file:
            return cls.from_bytes(file.read(), path, max_length, pad_token_id, vocab_size)

    @classmethod
    def from_bytes(cls, data: bytes, path: Path, max_length: int, pad_token_id: int,
                   vocab_size: int = 0) -> TextEncoder:
        """A tokenizer.json's bytes (read from `path`), checked before any text is: it parses, it encodes a probe
        text (a pre-tokenizer regex that fails or panics fails here, not on the first user text), and every id it
        can emit (its vocabulary, added and special tokens, the pad id) is below `vocab_size`, the encoder graph's
        embedding rows (0: unknown, then only the pad id is checked, against the tokenizer's own size)."""
        if len(data) > MAX_TOKENIZER_BYTES:
            raise RuntimeLoadError(f"{path}: more than {MAX_TOKENIZER_BYTES:,} bytes, too big for a tokenizer")
        try:
            with _rust_panics_unprinted():
                encoder = cls(Tokenizer.from_buffer(data), max_length, pad_token_id)
                probe = encoder.tokenizer.encode(PROBE_TEXT, add_special_tokens=True).ids
            largest = _largest_id(encoder.tokenizer)
        except (KeyboardInterrupt, SystemExit):
            raise
        # tokenizers raises bare Exceptions for unreadable files, and a panic of its Rust code (a pre-tokenizer
        # regex it cannot run) reaches Python as pyo3's PanicException, a BaseException.
        except BaseException as err:
            detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise RuntimeLoadError(f"{path}: not a readable tokenizer ({detail})") from None
        if not probe:  # every text would reach the graph as a sequence of length 0
            raise RuntimeLoadError(f"{path}: the tokenizer turns text into no tokens at all (its model or "
                                   f"post-processor emits none)")
        encoder._check_ids(path, vocab_size, max([largest, *probe]))
        return encoder

    def _check_ids(self, path: Path, vocab_size: int, largest: int) -> None:
        """An id at or past the embedding rows would fail in ONNX Runtime (CPU) or read other memory (CUDA) at
        the first text that holds it: another model's tokenizer is refused here, naming both sizes."""
        if vocab_size and largest >= vocab_size:
            raise RuntimeLoadError(f"{path}: the tokenizer has ids up to {largest:,}, but the encoder graph has "
                                   f"{vocab_size:,} embedding rows (ids 0-{vocab_size - 1:,}): it is another "
                                   f"model's tokenizer")
        bound = vocab_size or largest + 1
        if self.pad_token_id >= bound:
            owner = "the encoder graph's embedding rows" if vocab_size else "the tokenizer's ids"
            raise RuntimeLoadError(f"{path}: the padding id {self.pad_token_id:,} is past {owner} (0-{bound - 1:,})")

    def encode(self, texts: list[str]) -> list[Encoding]:
        """Truncated, unpadded encodings; a text that is not a non-empty string of valid Unicode is a DataError
        naming its index (`tokenizers` itself would raise a TypeError on a lone surrogate)."""
        texts = check_texts(texts)
        limit = self.max_length * CHARS_PER_TOKEN
        long_rows = [i for i, text in enumerate(texts) if len(text) > limit]
        encodings = self.tokenizer.encode_batch(
            [texts[i] if len(texts[i]) <= limit else "" for i in range(len(texts))], add_special_tokens=True
        )
        for i in long_rows:
            encodings[i] = self._encode_long(texts[i], limit)
        return encodings

    def _encode_long(self, text: str, limit: int) -> Encoding:
        """Tokenizing a 1 MB text takes seconds (20 MB without a space: a minute and gigabytes), only to keep its
        first max_length tokens. So tokenize a prefix cut at a space (a word boundary for every pre-tokenizer that
        splits on whitespace) and keep it when it already overflows max_length: its first tokens are then exactly
        the full text's. The prefix grows (`limit`, 4 x, up to `MAX_CHARS_PER_TOKEN` per token) until one does.
        A text that gives fewer tokens than that from its first max_length x MAX_CHARS_PER_TOKEN characters (a
        'word' longer than that, a run of [UNK] words) is tokenized from those characters only, cut at the last
        space among them: time and memory stay bounded whatever the text."""
        bound = self.max_length * MAX_CHARS_PER_TOKEN
        window = min(limit, bound)
        while True:
            cut = _LAST_SPACE.search(text, 0, window) if self.tokenizer.pre_tokenizer is not None else None
            if cut is not None and cut.start() > 0:
                prefix = self.tokenizer.encode(text[: cut.start()], add_special_tokens=True)
                if prefix.overflowing:
                    return prefix
            if window >= min(len(text), bound):
                break
            window = min(4 * window, bound)
        if len(text) <= bound:
            return self.tokenizer.encode(text, add_special_tokens=True)
        end = cut.start() if cut is not None and cut.start() > 0 else bound
        return self.tokenizer.encode(text[:end], add_special_tokens=True)

    def arrays(self, encodings: list[Encoding], names: list[str]) -> dict[str, np.ndarray]:
        """The named int64 inputs, (batch, longest row), right-padded as the graphs were validated."""
        length = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), length), self.pad_token_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        types = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: available[name] for name in names}
