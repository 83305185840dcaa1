"""A command's settings: ``--config FILE``, ``--set key=value``, moved flags, and the generated listing.

Every setting of a command is a field of its config dataclass, documented once
in a numpydoc "Parameters" section (of the dataclass, a base class, or the
estimator whose parameters it mirrors). ``aelab <command> --help`` ends with a
listing of those fields, their defaults and the first sentence of their
description, generated here from the fields and docstrings when the help is
shown, so adding a field adds it to the help and no default is typed twice.

Precedence of the values (lowest first): the config's defaults, the recipe
preset (``aelab finetune --recipe``), the ``--config`` file, then ``--set``
and the command's flags. A key given twice at one level is an error.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import os
import re
import textwrap
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from typer import core as typer_core

#: Width of the generated listing: an 80-column terminal (click indents the epilog by 2).
WIDTH = 77

SET_HELP = "A setting listed below, as key=value (repeatable)."
CONFIG_HELP = "A TOML file of settings listed below (key = value lines); --set wins over it."


@dataclass(frozen=True)
class Listing:
    """What the help of a command lists: the fields of ``config`` and where they are described.

    Attributes
    ----------
    config : type
        The config dataclass; its fields are the settings.
    docs : tuple of objects
        Objects whose numpydoc "Parameters" sections describe fields the
        dataclass's own (and its bases') docstrings do not, searched after them.
    presets : dict of str to dict
        Named presets (recipes) and the values they change, listed after the settings.
    """

    config: type
    docs: tuple[object, ...] = ()
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """Each field's default (``dataclasses.MISSING`` for a required one)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self.config):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
            else:
                out[f.name] = dataclasses.MISSING
        return out

    def build(self, values: Mapping[str, Any], preset: str | None = None) -> object | None:
        """The config that ``values`` make over the defaults (and ``preset``), checked.

        The task builds it again; building it here first refuses a bad value
        before any notice is printed or any work starts. ``None`` when a
        required field is missing (the task names it).
        """
        from aelab.tasks.options import coerce, field_types, with_overrides

        types = field_types(self.config)
        need = [k for k, v in self.defaults().items() if v is dataclasses.MISSING]
        if any(values.get(k) is None for k in need):
            return None
        config = self.config(**{k: coerce(values[k], types[k], k) for k in need})
        if preset is not None:
            config = with_overrides(config, self.presets[preset])
        return with_overrides(config, {k: v for k, v in values.items() if k not in need})


# ----------------------------------------------------------------------------- docstrings

_SECTION = re.compile(r"^\s*-{3,}\s*$")
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _parameter_entries(doc: str) -> list[tuple[list[str], str]]:
    """``(names, description)`` of each entry of a numpydoc "Parameters" section."""
    lines = inspect.cleandoc(doc).splitlines()
    start = next(
        (i + 2 for i, s in enumerate(lines[:-1])
         if s.strip() == "Parameters" and _SECTION.match(lines[i + 1])),
        None,
    )  # fmt: skip
    if start is None:
        return []
    entries: list[tuple[list[str], list[str]]] = []
    for i in range(start, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and _SECTION.match(lines[i + 1]) and line.strip():
            break  # the next section's title
        if line and not line[0].isspace():
            names = [n.strip() for n in line.split(" : ")[0].rstrip(":").split(",")]
            entries.append(([n for n in names if n], []))
        elif entries:
            entries[-1][1].append(line.strip())
    return [(names, "\n".join(text).strip()) for names, text in entries]


def first_sentence(text: str) -> str:
    """The first sentence of a description, reST roles and literals reduced to plain text."""
    text = _ROLE.sub(lambda m: m.group(1).split(".")[-1], text).replace("``", "")
    text = " ".join(re.split(r"\n\s*- ", text)[0].split())  # a bulleted list is not the gist
    text = re.split(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.\s+", text, maxsplit=1)[0]
    text = text.strip()
    if text.endswith(":"):  # "..., or one of:" and a list: keep what comes before
        text = text.rsplit(", ", 1)[0]
    return text.rstrip(":.") + "."


def field_docs(listing: Listing) -> dict[str, str]:
    """The one-line description of each field of ``listing.config``.

    An entry naming the field alone (in the dataclass, its bases, then
    ``listing.docs``, in that order) wins over one that names several fields
    at once ("batch_size, lr, loss : ..."); a field described nowhere gets "".
    """
    sources = [
        c for src in (listing.config, *listing.docs)
        for c in (type.mro(src)[:-1] if isinstance(src, type) else [src])
    ]  # fmt: skip
    single: dict[str, str] = {}
    grouped: dict[str, str] = {}
    for src in sources:
        for names, text in _parameter_entries(getattr(src, "__doc__", None) or ""):
            if not text:
                continue
            into = single if len(names) == 1 else grouped
            for name in names:
                into.setdefault(name, first_sentence(text))
    return {name: single.get(name, grouped.get(name, "")) for name in listing.defaults()}


# ----------------------------------------------------------------------------- the listing


def show(value: Any) -> str:
    """A value as one writes it after ``--set key=`` (and in a ``--config`` file)."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return ",".join(show(v) for v in value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def listing_text(listing: Listing) -> str:
    """The settings listing of a command's help, wrapped for an 80-column terminal."""
    docs = field_docs(listing)
    lines = ["Settings (--set key=value, or key = value in a --config file):"]
    for name, default in sorted(listing.defaults().items()):
        entry = f"  {name} = {show(default)}" + (f"  {docs[name]}" if docs[name] else "")
        lines += textwrap.wrap(entry, WIDTH, subsequent_indent=" " * 6, break_on_hyphens=False)
    if listing.presets:
        lines.append("")
        lines.append("Recipes (--recipe NAME; its values replace the defaults above):")
        for name, values in listing.presets.items():
            text = ", ".join(f"{k}={show(v)}" for k, v in values.items()) or "the defaults"
            lines += textwrap.wrap(f"  {name}: {text}", WIDTH, subsequent_indent=" " * 6)
    return "\n".join(lines)


class SettingsCommand(typer_core.TyperCommand):
    """A command whose help ends with its generated settings listing.

    The listing is built when the help is shown (importing the configs loads
    torch, which ``aelab --help`` must not wait for). It is the command's
    ``epilog`` for click and sphinx-click (each line kept as written: click's
    ``\\b`` marker), and is printed as plain text after typer's rich panels.
    """

    listing: Callable[[], Listing]
    _plain_epilog = False

    @property  # type: ignore[override]
    def epilog(self) -> str | None:
        if self._plain_epilog:
            return None
        return "\b\n" + listing_text(self.listing()).replace("\n\n", "\n\n\b\n")

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        pass  # the listing replaces any epilog given to the decorator

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        if not typer_core.HAS_RICH or self.rich_markup_mode is None:
            super().format_help(ctx, formatter)
            return
        self._plain_epilog = True  # rich would re-read brackets as markup and re-flow lines
        try:
            super().format_help(ctx, formatter)
        finally:
            self._plain_epilog = False
        formatter.write(listing_text(self.listing()) + "\n")


def settings_command(listing: Callable[[], Listing]) -> type[SettingsCommand]:
    """A :class:`SettingsCommand` class for ``app.command(cls=...)`` listing ``listing()``."""
    return type("SettingsCommand", (SettingsCommand,), {"listing": staticmethod(listing)})


# ----------------------------------------------------------------------------- gathering values


def read_config_file(path: Path | None, listing: Listing) -> dict[str, Any]:
    """The settings of a ``--config`` TOML file: a flat table of the listed keys."""
    if path is None:
        return {}
    try:
        table = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"--config {path}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path}: not a TOML file ({e})") from None
    known = listing.defaults()
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(
            f"--config {path}: unknown setting {', '.join(map(repr, unknown))}; "
            f"known settings: {', '.join(sorted(known))}"
        )
    return table


def moved_flags(
    ctx: typer.Context, convert: Mapping[str, Callable[[Any], tuple[str, Any]]] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The settings given by hidden, deprecated flags, and a one-line notice for each.

    A flag counts when it was typed on the command line. Its setting is the
    flag's parameter name, or what ``convert[name](value)`` returns as
    ``(key, value)`` (a renamed setting or a value in another form).
    """
    out: dict[str, Any] = {}
    notices: list[str] = []
    for p in ctx.command.params:
        if p.name not in _moved_names(ctx):
            continue
        source = ctx.get_parameter_source(p.name)  # typer's own click: compare by name
        if getattr(source, "name", None) != "COMMANDLINE":
            continue
        value = ctx.params[p.name]
        value = value.value if isinstance(value, enum.Enum) else value
        key, value = (convert or {}).get(p.name, lambda v, n=p.name: (n, v))(value)
        off = getattr(p, "secondary_opts", None)
        flag = off[0] if value is False and off else p.opts[0]
        if key in out:
            raise ValueError(
                f"{flag}: the setting {key} was given by another old flag; give it once"
            )
        notices.append(f"{flag} is deprecated; use --set {key}={show(value)}")
        out[key] = value
    return out, notices


def _moved_names(ctx: typer.Context) -> set[str]:
    return {
        p.name for p in ctx.command.params
        if getattr(p, "hidden", False) and p.name not in KEPT_HIDDEN
    }  # fmt: skip


#: Hidden options that are not settings and did not move (named in a visible help text).
KEPT_HIDDEN = frozenset({"skip_bad", "name", "num_workers", "labels"})


def gather(
    ctx: typer.Context,
    listing: Listing,
    flags: Mapping[str, Any],
    sets: Iterable[str] | None,
    config: Path | None,
    convert: Mapping[str, Callable[[Any], tuple[str, Any]]] | None = None,
    *,
    preset: str | None = None,
) -> dict[str, Any]:
    """The settings of a command: the ``--config`` file, overridden by flags and ``--set``.

    ``flags`` are the visible flags that are settings (``None``: not given);
    the old flags found by :func:`moved_flags` join them. A key given twice
    among flags, old flags and ``--set`` is an error. The result is checked
    (:meth:`Listing.build`, over ``preset``) before the old flags' notices
    are printed, so a refused value is one line.
    """
    from aelab.tasks.options import parse_assignments

    moved, notices = moved_flags(ctx, convert)
    given = {k: v for k, v in flags.items() if v is not None}
    levels = [("a flag", given), ("an old flag", moved), ("--set", parse_assignments(sets or []))]
    merged: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for where, values in levels:
        for key, value in values.items():
            if key in seen:
                raise ValueError(f"{key} given both as {seen[key]} and with {where}; give it once")
            seen[key] = where
            merged[key] = value
    values = {**read_config_file(config, listing), **merged}
    listing.build(values, preset)
    if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun, once
        for line in notices:
            typer.secho(line, err=True, fg=typer.colors.YELLOW)
    return values
