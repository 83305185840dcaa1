"""What every command shares: one-line errors with exit code 2."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import typer

#: Exceptions that mean "the user gave something wrong"; they print one line.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    NotADirectoryError,
    PermissionError,
    KeyError,
)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn a user error into ``error: <message>`` on stderr and exit code 2."""
    from aelab.training.loop import NonFiniteLossError

    try:
        yield
    except (*USER_ERRORS, NonFiniteLossError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None


def echo(msg: str) -> None:
    """Print a line; under torchrun only rank 0 prints, so a line appears once."""
    if os.environ.get("RANK", "0") in ("", "0"):
        typer.echo(msg)


#: ``--set key=value`` (repeatable): any setting of the command's config, spaCy style.
SET_HELP = (
    "Any other setting of this command's config, as key=value (repeatable), "
    "e.g. --set ema_decay=0.999; an unknown key lists the known ones."
)


def settings(flags: dict[str, object], sets: list[str] | None) -> dict[str, object]:
    """The settings the user gave: flags that were set (not ``None``), then ``--set`` pairs.

    A key given both as a flag and with ``--set`` is an error, so nothing is
    silently dropped.
    """
    from aelab.tasks.options import parse_assignments

    given = {k: v for k, v in flags.items() if v is not None}
    extra = parse_assignments(sets or [])
    both = sorted(set(given) & set(extra))
    if both:
        raise ValueError(f"{', '.join(both)} given both as a flag and with --set; give it once")
    return {**given, **extra}
