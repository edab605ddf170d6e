"""Text to padded token arrays with the `tokenizers` library only (no transformers)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from mtl.data.files import check_texts
from mtl.errors import RuntimeLoadError

# A text longer than this many characters per kept token is tokenized from a prefix first (see `_encode_long`).
CHARS_PER_TOKEN = 32
# Only a plain space: every whitespace pre-tokenizer splits there and no normalizer drops it. Other `\s` characters
# (form feed, U+001C-U+001F, U+0085) are control characters that BERT's normalizer deletes, joining the words
# around them, so a cut there would split what the full text tokenizes as one word.
_LAST_SPACE = re.compile(r" (?=[^ ]*$)")


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
    def load(cls, path: Path, max_length: int, pad_token_id: int) -> TextEncoder:
        if not Path(path).is_file():
            raise RuntimeLoadError(f"{path}: tokenizer file is missing")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises a bare Exception for any unreadable file
            raise RuntimeLoadError(f"{path}: not a readable tokenizer ({str(err).splitlines()[0][:200]})") from None
        return cls(tokenizer, max_length, pad_token_id)

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
        """Tokenizing a 1 MB text takes seconds, only to keep its first max_length tokens. So tokenize a prefix
        cut at a space (a word boundary for every pre-tokenizer that splits on whitespace) and keep it when
        it already overflows max_length: its first tokens are then exactly the full text's. Otherwise (a text of
        few, very long 'words'), tokenize the whole text."""
        if self.tokenizer.pre_tokenizer is not None:
            cut = _LAST_SPACE.search(text, 0, limit)
            if cut is not None and cut.start() > 0:
                prefix = self.tokenizer.encode(text[: cut.start()], add_special_tokens=True)
                if prefix.overflowing:
                    return prefix
        return self.tokenizer.encode(text, add_special_tokens=True)

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
