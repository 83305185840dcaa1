"""Each setting declared once: task settings are dataclass fields; overrides are checked against them.

A task takes a config dataclass (its fields hold every hyperparameter, with
their defaults) or named overrides of it. Overrides come from Python keyword
arguments, from the command line's ``--set key=value`` (spaCy style) and from
the study's TOML file; :func:`with_overrides` checks each key against the
fields and converts each value to the field's type, so an unknown key or a
value of the wrong kind is a one-line error naming the setting.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from aelab.tasks.results import _union_args

__all__ = ["coerce", "field_types", "parse_assignments", "with_overrides"]

C = TypeVar("C")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def field_types(cls: type) -> dict[str, Any]:
    """The fields of dataclass ``cls`` and their resolved types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _type_name(hint: Any) -> str:
    args = _union_args(hint)
    if args is not None:
        return " or ".join(_type_name(a) for a in args)
    if hint is type(None):
        return "none"
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        return "a list"
    return getattr(hint, "__name__", str(hint))


def coerce(value: Any, hint: Any, name: str) -> Any:
    """``value`` converted to type ``hint`` for setting ``name``, or a ValueError naming it.

    Strings (from the command line) are read as numbers, booleans and
    comma-separated lists where the type asks for them; floats must be finite.
    """
    args = _union_args(hint)
    if args is not None:
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            if type(None) in args:
                return None
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(value, option, name)
            except ValueError:
                continue
        raise ValueError(f"{name}: {value!r} is not {_type_name(hint)}")
    origin = typing.get_origin(hint)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ValueError(f"{name}: {value!r} is not a list")
        item = (typing.get_args(hint) or (Any,))[0]
        items = [coerce(v, item, name) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ValueError(
                f"{name}: {value!r} is not a table of settings, e.g. {{latent_dim = 64}}"
            )
        return dict(value)
    if hint is Any:
        return value
    if hint in _SCALARS:
        return _SCALARS[hint](value, name)
    if isinstance(value, hint):
        return value
    raise ValueError(f"{name}: {value!r} is not {_type_name(hint)}")


def _to_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{name}: {value!r} is not true or false")


def _to_int(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer():
        raise ValueError(f"{name}: {value!r} is not an integer")
    return int(number)


def _to_float(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is not a number") from None
    if isinstance(value, bool):
        raise ValueError(f"{name}: {value!r} is not a number")
    if not math.isfinite(number):
        raise ValueError(f"{name}: {value!r} must be a finite number")
    return number


def _to_str(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"{name}: {value!r} is not text")


_SCALARS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str}


def with_overrides(config: C, overrides: Mapping[str, Any] | None, *, where: str = "") -> C:
    """A copy of dataclass ``config`` with ``overrides`` applied (checked and converted).

    Parameters
    ----------
    config : dataclass instance
    overrides : mapping of str to value, optional
        Field names and values; ``None`` values are skipped only when the
        field cannot be ``None`` (so an unset CLI option falls through).
    where : str
        Prefix of the setting names in error messages (e.g. ``"finetune."``).

    Raises
    ------
    ValueError
        For an unknown key (the message lists the known ones) or a value that
        does not fit the field; the config's own checks (``__post_init__``)
        then run on the result.
    """
    if not overrides:
        return config
    types = field_types(type(config))
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in types:
            known = ", ".join(sorted(types))
            raise ValueError(f"unknown setting '{where}{key}'; known settings: {known}")
        hint = types[key]
        args = _union_args(hint)
        if value is None and not (args and type(None) in args):
            continue
        changes[key] = coerce(value, hint, f"{where}{key}")
    try:
        return dataclasses.replace(config, **changes)  # type: ignore[type-var]
    except ValueError as e:
        raise ValueError(f"[{where.rstrip('.')}] {e}" if where else str(e)) from None


def parse_assignments(pairs: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.003", "ema_decay=0.999"]`` (the CLI's ``--set``) as a dict.

    Values are read as TOML literals when they are one (numbers, booleans,
    quoted text, ``[lists]``), else kept as text; the field type converts them
    later (:func:`with_overrides`).
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: write it as key=value, e.g. --set lr=0.003")
        if key in out:
            raise ValueError(f"--set {key} given twice")
        text = text.strip()
        try:
            out[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = text
    return out
