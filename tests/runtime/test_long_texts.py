"""A text of any length costs bounded time and memory to encode: the runtime never hands the tokenizer more than
max_length x MAX_CHARS_PER_TOKEN characters, even for 20 MB without a space (tokenized whole, that took about a
minute and gigabytes per the measurements in `TextEncoder._encode_long`), and a long text keeps exactly the tokens
a full tokenization gives wherever its prefix overflows max_length."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from mtl.runtime.tokenizer import MAX_CHARS_PER_TOKEN, TextEncoder
from tests.factory import MAX_LENGTH, _trained_core

FAMILIES = ("wordpiece", "bpe", "unigram")
TWENTY_MB = 20_000_000
# Without a plain space: one letter (one 'word' for every pre-tokenizer), punctuation between letters (many words
# for BERT and byte-level BPE, one for Metaspace), CJK (split per character by BERT's normalizer).
KINDS = {"letters": "x", "punctuated": "abc.def,", "cjk": "東京"}


class RecordingTokenizer:
    """The real tokenizer, noting the longest text it is given."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def encode(self, text, **kwargs):
        self.longest = max(self.longest, len(text))
        return self.tokenizer.encode(text, **kwargs)

    def encode_batch(self, texts, **kwargs):
        self.longest = max([self.longest, *map(len, texts)])
        return self.tokenizer.encode_batch(texts, **kwargs)


def encoder(family: str) -> tuple[TextEncoder, RecordingTokenizer]:
    text_encoder = TextEncoder(Tokenizer.from_str(_trained_core(family)), MAX_LENGTH, 0)
    text_encoder.tokenizer = recording = RecordingTokenizer(text_encoder.tokenizer)
    return text_encoder, recording


def full_tokenization(family: str, text: str):
    tokenizer = Tokenizer.from_str(_trained_core(family))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokenizer.no_padding()
    return tokenizer.encode(text)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_twenty_megabytes_without_a_space_are_tokenized_from_a_bounded_prefix(family, kind):
    text = (KINDS[kind] * (TWENTY_MB // len(KINDS[kind]) + 1))[:TWENTY_MB]
    text_encoder, recording = encoder(family)
    encoding = text_encoder.encode([text, "a short text"])[0]
    assert 0 < len(encoding.ids) <= MAX_LENGTH
    assert recording.longest <= MAX_LENGTH * MAX_CHARS_PER_TOKEN


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", FAMILIES)
def test_a_long_text_without_a_space_keeps_the_tokens_of_a_full_tokenization(family, kind):
    """Past the bound, what the runtime cuts off lies after the max_length tokens it keeps: same ids."""
    text = KINDS[kind] * (4 * MAX_LENGTH * MAX_CHARS_PER_TOKEN // len(KINDS[kind]))
    text_encoder, recording = encoder(family)
    got, want = text_encoder.encode([text])[0], full_tokenization(family, text)
    assert recording.longest <= MAX_LENGTH * MAX_CHARS_PER_TOKEN < len(text)
    assert got.ids == want.ids and got.type_ids == want.type_ids


def test_words_longer_than_the_search_window_still_cut_at_a_space():
    """A first 'word' longer than the first window (MAX_LENGTH x 32 characters): the window grows to find a space."""
    text = "q" * (MAX_LENGTH * 64) + " " + "the team won the match. " * 5000
    for family in FAMILIES:
        text_encoder, recording = encoder(family)
        got, want = text_encoder.encode([text])[0], full_tokenization(family, text)
        assert got.ids == want.ids and recording.longest < len(text)
