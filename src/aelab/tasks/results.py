"""Typed results that cross layers: frozen dataclasses that write and read themselves as JSON.

Every task returns a frozen dataclass deriving from :class:`Record`; the study
keeps those records in ``steps/*.json`` and the report reads them back with
:meth:`Record.from_json`, so no layer reaches into another's results through
string keys. Field types drive the conversion both ways: nested records,
tuples (written as lists), ``Path`` (as text), and floats that are not finite
(written as ``null``, read back as ``None``, so the JSON is valid everywhere).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

__all__ = ["Record", "from_jsonable", "to_jsonable"]

R = TypeVar("R", bound="Record")


def to_jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: records and dataclasses as dicts, tuples as lists.

    Non-finite floats become ``None``; numpy scalars and arrays become Python
    numbers and lists.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars and arrays
    if callable(tolist):
        return to_jsonable(tolist())
    raise TypeError(f"cannot write a {type(value).__name__} into a result record")


def _union_args(hint: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return typing.get_args(hint)
    return None


def from_jsonable(data: Any, hint: Any, where: str = "record") -> Any:
    """Rebuild a value of type ``hint`` from what :func:`to_jsonable` wrote."""
    if hint is Any:
        return data
    args = _union_args(hint)
    if args is not None:
        return _from_union(data, hint, args, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _from_dataclass(data, hint, where)
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return _from_sequence(data, hint, origin, where)
    if origin is dict:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        _, value_hint = typing.get_args(hint) or (str, Any)
        return {k: from_jsonable(v, value_hint, f"{where}.{k}") for k, v in data.items()}
    return _from_scalar(data, hint, where)


def _from_union(data: Any, hint: Any, args: tuple[Any, ...], where: str) -> Any:
    if data is None and type(None) in args:
        return None
    errors = []
    for option in (a for a in args if a is not type(None)):
        try:
            return from_jsonable(data, option, where)
        except (TypeError, ValueError) as e:
            errors.append(str(e))
    raise ValueError(f"{where}: {data!r} fits none of {hint} ({'; '.join(errors)})")


def _from_dataclass(data: Any, hint: type, where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected an object for {hint.__name__}, got {data!r}")
    hints = typing.get_type_hints(hint)
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(hint)})
    if unknown:
        raise ValueError(f"{where}: unknown fields {unknown} for {hint.__name__}")
    return hint(**{k: from_jsonable(v, hints[k], f"{where}.{k}") for k, v in data.items()})


def _from_sequence(data: Any, hint: Any, origin: Any, where: str) -> Any:
    if not isinstance(data, list | tuple):
        raise ValueError(f"{where}: expected a list, got {data!r}")
    args = typing.get_args(hint)
    if origin is tuple and args and args[-1] is not Ellipsis:
        pairs = zip(data, args, strict=True)
        items = [from_jsonable(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(pairs)]
    else:
        item = args[0] if args else Any
        items = [from_jsonable(v, item, f"{where}[{i}]") for i, v in enumerate(data)]
    return tuple(items) if origin is tuple else items


def _from_scalar(data: Any, hint: Any, where: str) -> Any:
    if hint is float:
        if data is None:
            return math.nan  # written as null because it was not finite
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ValueError(f"{where}: expected a number, got {data!r}")
        return float(data)
    if hint is int:
        if isinstance(data, bool) or not isinstance(data, int):
            raise ValueError(f"{where}: expected an integer, got {data!r}")
        return data
    if hint is Path:
        if not isinstance(data, str):
            raise ValueError(f"{where}: expected a path, got {data!r}")
        return Path(data)
    if hint in (str, bool):
        if not isinstance(data, hint):
            raise ValueError(f"{where}: expected {hint.__name__}, got {data!r}")
        return data
    if hint is type(None):
        if data is not None:
            raise ValueError(f"{where}: expected null, got {data!r}")
        return None
    raise TypeError(f"{where}: cannot read a value of type {hint}")


class Record:
    """Base of the frozen result dataclasses: ``to_json()`` and ``from_json()``."""

    def to_json(self) -> dict[str, Any]:
        """The record as JSON data (dicts, lists, numbers, text, ``None``)."""
        return to_jsonable(self)

    @classmethod
    def from_json(cls: type[R], data: Any) -> R:
        """Rebuild the record from what :meth:`to_json` returned."""
        return from_jsonable(data, cls, cls.__name__)
