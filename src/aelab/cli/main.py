"""The ``aelab`` command. Each subcommand lives in its own module and registers itself.

Command modules import only typer at import time, so ``aelab --help`` is instant;
heavy libraries load inside the command that needs them.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
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
