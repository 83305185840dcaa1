"""The study's own settings, each with the rule it must follow, declared once beside its field.

As :class:`~aelab.clustering.EquilibriumKMeans` declares its parameters'
allowed values in one table, each section of the study config declares a
``rules`` table (setting -> :class:`Rule`), checked when the section is made:
from the defaults, the TOML file, the flags, before the plan loads any data
and before any step trains. The settings of the tasks inside a section
(``[pretrain]``'s fields, ``[finetune]``'s, ``[cluster]``'s,
``[anomaly]``'s) are checked by their own dataclasses in the same moment, with
the same messages the commands give.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Checked", "Rule", "at_least", "between", "list_of", "one_of", "parses"]


@dataclass(frozen=True)
class Rule:
    """What a setting must be: a test, and the words the error message uses for it."""

    test: Callable[[Any], bool]
    must: str


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def at_least(low: float) -> Rule:
    """A number ``>= low``."""
    return Rule(lambda v: _number(v) and v >= low, f">= {low}")


def between(low: float, high: float) -> Rule:
    """A number strictly between ``low`` and ``high``."""
    return Rule(lambda v: _number(v) and low < v < high, f"in ({low}, {high})")


def one_of(options: Iterable[str]) -> Rule:
    """One of ``options``."""
    allowed = tuple(options)
    return Rule(lambda v: v in allowed, f"one of {', '.join(allowed)}")


def list_of(item: Rule, *, empty: bool = True, unique: bool = False, must: str = "") -> Rule:
    """A list whose items follow ``item`` (non-empty and without repeats when asked).

    ``must`` words the rule for the message (by default from ``item``'s).
    """

    def test(v: Any) -> bool:
        items = list(v) if isinstance(v, list | tuple) else None
        return (
            items is not None
            and (empty or bool(items))
            and (not unique or len(set(map(str, items))) == len(items))
            and all(item.test(x) for x in items)
        )

    words = f"{'a list' if empty else 'a non-empty list'} of {item.must}"
    return Rule(test, must or words + (", each at most once" if unique else ""))


def parses(read: Callable[[Any], Any], must: str) -> Rule:
    """A value ``read`` accepts (the parser the step itself uses)."""

    def test(v: Any) -> bool:
        try:
            read(v)
        except ValueError:
            return False
        return True

    return Rule(test, must)


class Checked:
    """A config section checked against its ``rules`` when made (``__post_init__``).

    The message names the setting as the TOML file writes it (``shown`` maps
    a field to another name) and says what it must be; the section's name in
    brackets is added by :func:`aelab.tasks.with_overrides`.
    """

    rules: ClassVar[dict[str, Rule]] = {}
    shown: ClassVar[dict[str, str]] = {}

    def __post_init__(self) -> None:
        for name, rule in self.rules.items():
            value = getattr(self, name)
            if not rule.test(value):
                shown = self.shown.get(name, name)
                raise ValueError(f"{shown} must be {rule.must}, got {value!r}")
