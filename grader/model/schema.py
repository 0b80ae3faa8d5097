"""Frozen dataclasses from TOML tables: types, value rules and unknown keys checked in one place.

A config dataclass declares each setting with `setting(default, rule)`; `from_table` builds it from
a parsed TOML table and raises the caller's error type with one line that names the file, the key
and what is expected, e.g. `.../assignment.toml: limits.cell_seconds must be a number above 0,
found -5`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_PLAIN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")


@dataclass(frozen=True)
class Rule:
    """What a setting's value must satisfy beyond its type, and how to say it."""

    ok: Callable[[Any], bool]
    expect: str  # completes "KEY must be ...", e.g. "a number above 0"


def setting(default: Any = dataclasses.MISSING, rule: Rule | None = None) -> Any:
    """A dataclass field with a default (none: required) and a rule its value must satisfy."""
    return dataclasses.field(default=default, metadata={"rule": rule} if rule else {})


def plain_name(value: str) -> bool:
    """A single file or folder name: no separator, not hidden, not . or .."""
    return bool(_PLAIN.match(value)) and value not in (".", "..")


def relative_path(value: str) -> bool:
    """A relative path that stays inside its folder (no absolute path, no .. part)."""
    return bool(value) and not value.startswith("/") and ".." not in value.split("/") and "\\" not in value


def hex_digest(length: int) -> Rule:
    """An empty string or LENGTH lowercase hex digits."""
    return Rule(lambda v: v == "" or re.fullmatch(f"[0-9a-f]{{{length}}}", v) is not None,
                f"{length} lowercase hex digits")


POSITIVE = Rule(lambda v: v > 0, "a number above 0")
NOT_NEGATIVE = Rule(lambda v: v >= 0, "a whole number, 0 or more")
NOT_EMPTY = Rule(lambda v: bool(v.strip()), "a non-empty string")
PLAIN_NAME = Rule(plain_name, "a plain name (letters, digits, _ . + -; no folder)")
RELATIVE_PATHS = Rule(lambda v: all(relative_path(p) for p in v),
                      "a list of relative paths without '..'")


def from_table(cls: type, table: object, *, where: str, error: type[Exception], prefix: str = "",
               given: dict[str, Any] | None = None) -> Any:
    """Build the dataclass CLS from TABLE, refusing unknown keys, wrong types and bad values.

    WHERE names the file, PREFIX the table the keys sit in ("limits."), GIVEN fields set by the
    caller rather than the file (e.g. a registry entry's name, which is its table's key).
    """
    given = given or {}
    if not isinstance(table, dict):
        raise error(f"{where}: {prefix.rstrip('.') or 'the file'} must be a table, found {table!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.name not in given}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise error(f"{where}: unknown key {prefix}{unknown[0]}; expected one of: "
                    f"{', '.join(prefix + name for name in known)}")
    values = dict(given)
    for name, raw in table.items():
        kind, key = hints[name], prefix + name
        table_kind = _unoptional(kind)  # an optional table ([deadline]) is a table where given
        if isinstance(table_kind, type) and dataclasses.is_dataclass(table_kind):
            values[name] = from_table(table_kind, raw, where=where, error=error, prefix=f"{key}.")
            continue
        value = _typed(kind, raw)
        if value is _WRONG:
            raise error(f"{where}: {key} must be {_describe(kind)}, found {raw!r}")
        rule = known[name].metadata.get("rule")
        if rule is not None and not rule.ok(value):
            raise error(f"{where}: {key} must be {rule.expect}, found {raw!r}")
        values[name] = value
    missing = [name for name, f in known.items() if name not in values and _required(f)]
    if missing:
        kind = hints[missing[0]]
        raise error(f"{where}: {prefix}{missing[0]} is missing: expected {_describe(kind)}")
    return cls(**values)


_WRONG = object()


def _unoptional(kind: Any) -> Any:
    """X for the type X | None, else KIND."""
    if isinstance(kind, types.UnionType):
        return next(a for a in kind.__args__ if a is not type(None))
    return kind


def _typed(kind: Any, value: object) -> object:
    """VALUE as the Python type KIND (int promoted to float, list to tuple), else _WRONG."""
    if isinstance(value, bool):
        return _WRONG  # TOML's true/false are never a number or a string here
    if isinstance(kind, types.UnionType):  # X | None: TOML has no null, so it is X
        return _typed(next(a for a in kind.__args__ if a is not type(None)), value)
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(value, list):
            return _WRONG
        items = tuple(_typed(item, v) for v in value)
        return _WRONG if _WRONG in items else items
    if kind is float and isinstance(value, int):
        return float(value)
    return value if isinstance(value, kind) else _WRONG


def _describe(kind: Any) -> str:
    """KIND in words, for a message."""
    if isinstance(kind, types.UnionType):
        return _describe(next(a for a in kind.__args__ if a is not type(None)))
    if typing.get_origin(kind) is tuple:
        return f"a list of {_describe(typing.get_args(kind)[0]).removeprefix('a ')}s"
    words = {float: "a number", int: "a whole number", str: "a string"}
    return words.get(kind, "a table" if dataclasses.is_dataclass(kind) else str(kind))


def _required(f: dataclasses.Field[Any]) -> bool:
    """Whether the field has no default."""
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
