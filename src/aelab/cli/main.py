"""The ``aelab`` command. Each subcommand lives in its own module and registers itself.

Command modules import only typer at import time, so ``aelab --help`` is instant;
heavy libraries load inside the command that needs them.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup


class _OneLineErrors(TyperGroup):
    """The root group: a usage error (a bad option value, a missing argument) is one line.

    Click prints a usage box for these; aelab prints ``error: <what>; see --help``
    with exit code 2, as for every other refused input.
    """

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as e:  # click's usage errors, as typer raises them
            if not standalone_mode:
                raise
            ctx = getattr(e, "ctx", None)
            where = f"`{ctx.command_path} --help`" if ctx is not None else "--help"
            text = (e.format_message() if hasattr(e, "format_message") else str(e)).rstrip(". ")
            if text:  # (no arguments at all: the help was shown already)
                typer.secho(f"error: {text}; see {where}", err=True, fg=typer.colors.RED)
            sys.exit(getattr(e, "exit_code", 2))
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    name="aelab",
    help="Convolutional autoencoders with few labels: pre-train, fine-tune, cluster, detect, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# One module per command (or command group); each defines ``register(app)``.
_COMMAND_MODULES: tuple[str, ...] = (
    "study",
    "learn",
    "embed",
    "cluster",
    "deepcluster",
    "anomaly",
    "models",
)

for _name in _COMMAND_MODULES:
    importlib.import_module(f"aelab.cli.{_name}").register(app)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    if version:
        from aelab import __version__

        typer.echo(f"aelab {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


def main() -> None:
    app()
