"""What text is blank, what a label may hold, and how data is shown on a terminal: one home for the rules every
layer shares (the config, the readers, the CLI). Standard library only.

A "blank" text is one a person sees nothing of: whitespace, control and format characters (zero-width space and
joiners U+200B-U+200D, word joiner U+2060, byte-order mark U+FEFF, bidi marks), and the few letters that render as
nothing (Hangul fillers, braille blank, variation selectors). Such a text is refused like an empty one.

Labels must look like what they are: no control characters, line separators or bidi overrides (they break,
reorder or hide what a terminal shows), not blank, and no two labels of a task may look alike: equal once in
Unicode normal form C with format characters removed ("é" as one code point or as e + U+0301, "a" and "a" +
zero-width joiner). Joiners inside a label stay valid: emoji sequences and Persian or Indic words need them.
"""

from __future__ import annotations

import re
import unicodedata

# Letters and symbols that render as nothing, beyond the whitespace, Cc and Cf categories.
_INVISIBLE = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u180e") | frozenset(map(chr, range(0xFE00, 0xFE10)))
_BLANK_CATEGORIES = ("Cc", "Cf", "Zs", "Zl", "Zp")
# Bidi embeddings, overrides and isolates: they reorder the characters a terminal shows after them.
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_SNIPPET = 60  # characters of data quoted in a message at most


def _invisible(char: str) -> bool:
    if char < "\x80":
        return char <= " " or char == "\x7f"
    return (char in _INVISIBLE or "\U000e0100" <= char <= "\U000e01ef"
            or unicodedata.category(char) in _BLANK_CATEGORIES)


def is_blank(text: str) -> bool:
    """True when a person would see nothing of `text` (stops at the first visible character)."""
    if "!" <= text[:1] <= "~":
        return False  # the common case, decided by the first character
    return all(_invisible(char) for char in text)


def label_problem(label: str) -> str | None:
    """Why `label` cannot name a class, or None. Checked where labels are read and where a config is loaded."""
    if is_blank(label):
        return "is empty or invisible (only spaces, control or zero-width characters)"
    for char in label:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI_CONTROLS:
            return f"holds the control character U+{ord(char):04X}, which a terminal would not show as it is"
    return None


def look_alike_key(label: str) -> str:
    """What a person sees of a label: its NFC form without format characters (zero-width, joiners, BOM)."""
    return "".join(c for c in unicodedata.normalize("NFC", label) if unicodedata.category(c) != "Cf")


def look_alike_pairs(labels) -> list[tuple[str, str]]:
    """Pairs of different labels that look the same (equal `look_alike_key`), in the order they are met."""
    seen: dict[str, str] = {}
    pairs = []
    for label in labels:
        first = seen.setdefault(look_alike_key(label), label)
        if first != label:
            pairs.append((first, label))
    return pairs


def describe_look_alikes(first: str, second: str) -> str:
    """Two look-alike labels written so that their difference shows: as escaped code points."""
    return f"labels {_escaped_label(first)} and {_escaped_label(second)} look the same but are different strings"


def _escaped_label(label: str, limit: int = _SNIPPET) -> str:
    return ascii(label[:limit]) + ("..." if len(label) > limit else "")


# Anything str.isprintable() refuses: C0/C1 controls (ESC, CR, BEL), format characters (bidi overrides, zero-width),
# line and paragraph separators, lone surrogates, unassigned code points.
def printable(text: str, keep_newlines: bool = False) -> str:
    """`text` safe to write to a terminal: every non-printable character as an escape (`\\x1b`, `\\u202e`), so no
    data can move the cursor, recolour, retitle, reorder or hide what the terminal shows. `keep_newlines` lets
    the line breaks of a multi-line message through."""
    if text.isprintable():
        return text
    return "".join(_escaped(char, keep_newlines) for char in text)


def _escaped(char: str, keep_newlines: bool) -> str:
    if char.isprintable() or (keep_newlines and char == "\n"):
        return char
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable_json(text: str) -> str:
    """JSON text (as `json.dumps(..., ensure_ascii=False)` writes it) with every non-printable character escaped
    as `\\uXXXX`: the same data for any JSON reader, and nothing a terminal showing the output would act on (JSON
    itself escapes only U+0000-U+001F, not DEL, C1 controls, bidi overrides or U+2028)."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _json_escaped(ord(char)) for char in text)


def _json_escaped(code: int) -> str:
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def snippet(text: str, limit: int = _SNIPPET) -> str:
    """A short, escaped, quoted piece of data for a message: at most `limit` characters of it."""
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


def shortened(text: str, limit: int = 200) -> str:
    """A list of names for a message (columns, labels), escaped and cut to `limit` characters."""
    return printable(text[:limit]) + ("..." if len(text) > limit else "")


_WHITESPACE_RUN = re.compile(r"\s+")


def label_shape(label: str) -> str:
    """A label reduced to what typos usually change: case, compatibility forms and whitespace."""
    return _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFKC", label)).strip().casefold()
