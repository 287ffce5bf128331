"""JSON for the engine's frozen dataclasses: a typed reader that refuses unknown keys, and a writer.

:func:`from_json` builds a record from parsed JSON by its type hints: every value is checked against its field's type
(``str``, ``int``, ``float``, ``bool``, ``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]``, nested records), a key
the record does not have is refused, and a key it needs is asked for. Problems come out as :class:`RecordError`, which
says where in the document they are, so a caller can turn them into one-line messages.

:func:`to_json` writes a record back. Given ``like`` (the JSON the record was read from), it keeps that document's
layout: its keys in its order, and fields the document did not have are left out while they still hold the value the
reader filled in for them. A file written by an older version therefore reads and writes back unchanged.

Field metadata understood by both:

* ``OPTIONAL``: the key is left out of the JSON while the field holds its default (e.g. an evaluation without a
  healthy-scan part);
* ``KEY``: the JSON key, where it differs from the field name;
* ``INLINE`` (writing only): the nested record's keys go into the parent's table instead of under the field's key;
* ``INTERNAL``: the field is not part of the JSON (neither read nor written).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

from engine.errors import one_line

OPTIONAL = "optional"
KEY = "key"
INLINE = "inline"
INTERNAL = "internal"


class RecordError(ValueError):
    """A JSON value that does not fit the record it should describe.

    Attributes:
        where: dotted path of the value in the document (``"members.3.sha256"``; empty for the document itself).
        problem: what is wrong, in a few words (``"should be text, not int"``).
        wrong_kind: the value itself is of another kind (text for a table, ...), rather than a good kind of value
            with a problem inside.
    """

    def __init__(self, where: str, problem: str, *, wrong_kind: bool = False) -> None:
        super().__init__(f"{where!r} {problem}" if where else problem)
        self.where = where
        self.problem = problem
        self.wrong_kind = wrong_kind


def wrong_kind(where: str, kind: Any, value: Any) -> RecordError:
    """The error for a value of another kind than ``kind`` asks for."""
    return RecordError(where, f"should be {describe(kind)}, not {type_name(value)}", wrong_kind=True)


def json_key(f: Field) -> str:
    """The JSON key of a dataclass field."""
    return f.metadata.get(KEY, f.name)


def _in_json(f: Field) -> bool:
    return f.init and not f.metadata.get(INTERNAL, False)


def type_name(value: Any) -> str:
    """JSON's name for the type of a parsed value (``table``, ``list``, ``text``, ...)."""
    if value is None:
        return "null"
    return {dict: "a table", list: "a list", str: "text", bool: "true/false", int: "a whole number",
            float: "a number"}.get(type(value), type(value).__name__)


def describe(kind: Any) -> str:
    """What a type hint asks for, in words (``"text or a number"``)."""
    origin = get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(kind) if not (a is int and float in get_args(kind))]
        return " or ".join(describe(a) for a in args)
    if kind is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(kind))
    if origin is tuple:
        return "a list"
    if origin in (dict, Mapping) or is_dataclass(kind):
        return "a table"
    return {str: "text", bool: "true or false", int: "a whole number", float: "a number"}.get(kind, str(kind))


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def from_json(kind: Any, value: Any, where: str = "") -> Any:
    """``value`` (parsed JSON) as the type ``kind``; tuples for lists, records for tables.

    Raises:
        RecordError: the value or something inside it does not fit.
    """
    origin = get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _one_of(kind, value, where)
    if is_dataclass(kind):
        return record_from_json(kind, value, where)  # type: ignore[arg-type]
    if origin is Literal:
        if value not in get_args(kind):
            raise RecordError(where, f"should be {describe(kind)}, not {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise wrong_kind(where, kind, value)
        return tuple(from_json(get_args(kind)[0], v, _join(where, i)) for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise wrong_kind(where, kind, value)
        return {k: from_json(get_args(kind)[1], v, _join(where, k)) for k, v in value.items()}
    if not _is_scalar(kind, value):
        raise wrong_kind(where, kind, value)
    return value


def _one_of(kind: Any, value: Any, where: str) -> Any:
    """``value`` as the first type of the union ``kind`` it is a kind of."""
    if value is None and type(None) in get_args(kind):
        return None
    for option in get_args(kind):
        if option is type(None):
            continue
        try:
            return from_json(option, value, where)
        except RecordError as error:
            if not (error.wrong_kind and error.where == where):  # the right kind, with a problem inside: say that
                raise
    raise wrong_kind(where, kind, value)


def _is_scalar(kind: type, value: Any) -> bool:
    """Whether ``value`` is a JSON scalar of type ``kind`` (a whole number counts as a number; true is no number)."""
    if isinstance(value, bool) and kind is not bool:
        return False
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def record_from_json(cls: type, value: Any, where: str = "", *, given: Mapping[str, Any] | None = None) -> Any:
    """A record of dataclass ``cls`` from a JSON table: every key known, every needed key there, every value typed.

    ``given`` holds field values the caller has already read (by field name); their keys are not looked up in
    ``value``.

    Raises:
        RecordError: an unknown key, a missing key, a value of the wrong type, or a value the record refuses.
    """
    if not isinstance(value, dict):
        raise wrong_kind(where, cls, value)
    given = given or {}
    known = {json_key(f): f for f in fields(cls) if _in_json(f) and f.name not in given}
    for key in value:
        if key not in known:
            raise RecordError(where, f"has an unknown key {key!r}")
    hints = get_type_hints(cls)
    args = dict(given)
    for key, f in known.items():
        if key in value:
            args[f.name] = from_json(hints[f.name], value[key], _join(where, key))
        elif f.default is MISSING and f.default_factory is MISSING:
            raise RecordError(where, f"lacks the key {key!r}")
    try:
        return cls(**args)
    except (TypeError, ValueError) as exc:  # a record's own checks (ConfigError is a ValueError)
        raise RecordError(where, f"is unreadable ({one_line(exc)})") from exc


def default_of(f: Field) -> Any:
    """A field's default value (``MISSING`` when it has none)."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def same(a: Any, b: Any) -> bool:
    """Equal, counting NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


def to_json(value: Any, like: Any = None) -> Any:
    """``value`` as plain JSON data (records become tables, tuples lists), in the layout of ``like`` where given."""
    if is_dataclass(value) and not isinstance(value, type):
        return record_to_json(value, like if isinstance(like, dict) else None)
    if isinstance(value, list | tuple):
        olds = like if isinstance(like, list) else []
        return [to_json(v, olds[i] if i < len(olds) else None) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        olds = like if isinstance(like, dict) else {}
        return {str(k): to_json(v, olds.get(str(k))) for k, v in value.items()}
    return value


def record_to_json(record: Any, like: dict[str, Any] | None = None) -> dict[str, Any]:
    """A record as a JSON table (see the module docstring for ``like`` and the field metadata)."""
    out: dict[str, Any] = {}
    for f in fields(record):
        if not _in_json(f):
            continue
        key = json_key(f)
        value = getattr(record, f.name)
        if f.metadata.get(INLINE):
            out.update(record_to_json(value, like))
            continue
        leave_out = f.metadata.get(OPTIONAL, False) or (like is not None and key not in like)
        if leave_out and same(value, default_of(f)):
            continue
        out[key] = to_json(value, like.get(key) if like is not None else None)
    if like:
        out = {**{k: out[k] for k in like if k in out}, **{k: v for k, v in out.items() if k not in like}}
    return out
