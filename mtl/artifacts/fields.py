"""Typed values out of parsed JSON (a manifest, a config): each value is taken as the type it must be, never coerced.
`int("3")`, `int(True)` and `tuple("abc") == ('a', 'b', 'c')` are how a wrong type used to pass as a right one;
here a wrong type is a ValueError naming the key, what it holds and what it must be. No torch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mtl.config import Range

_MISSING = object()
_KINDS = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "a whole number"}


def need(data: Mapping[str, Any], key: str, kind: type, where: str = "", default: Any = _MISSING) -> Any:
    """`data[key]` if it is a `kind` (a bool is no int), or `default` when absent; KeyError if absent without one."""
    if key not in data:
        if default is _MISSING:
            raise KeyError(f"{where}{key}")
        return default
    return check_type(data[key], kind, f"{where}{key}")


def check_type(value: Any, kind: type, name: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"{name} must be {_KINDS.get(kind, kind.__name__)}, not {describe(value)}")
    return value


def number(data: Mapping[str, Any], key: str, valid: Range, where: str = "", default: Any = _MISSING) -> Any:
    """`data[key]` if it is a number within `valid`, and whole where `valid` says so (no bool, no string)."""
    if key not in data:
        if default is _MISSING:
            raise KeyError(f"{where}{key}")
        return default
    valid.check(f"{where}{key}", data[key])  # a ConfigError (a ValueError) naming the range
    return data[key]


def strings(data: Mapping[str, Any], key: str, where: str = "") -> tuple[str, ...]:
    """`data[key]` if it is a list of strings (a bare string is not one)."""
    values = need(data, key, list, where)
    for i, value in enumerate(values):
        check_type(value, str, f"{where}{key}[{i}]")
    return tuple(values)


def numbers(data: Mapping[str, Any], key: str, valid: Range, where: str = "") -> dict[str, Any]:
    """`data[key]` if it is an object whose values are numbers within `valid`."""
    values = need(data, key, dict, where)
    for name, value in values.items():
        valid.check(f"{where}{key}.{name}", value)
    return dict(values)


def objects(data: Mapping[str, Any], key: str, where: str = "") -> dict[str, dict]:
    """`data[key]` if it is an object whose values are objects."""
    values = need(data, key, dict, where)
    for name, value in values.items():
        check_type(value, dict, f"{where}{key}.{name}")
    return values


def describe(value: Any) -> str:
    """A short, printable account of a value read from a file: its type, and its repr cut to 40 characters."""
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
