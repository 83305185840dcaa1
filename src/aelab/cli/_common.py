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
