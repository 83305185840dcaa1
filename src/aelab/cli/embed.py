"""``aelab embed``: latent vectors of images, optionally of a class subset in a given ratio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aelab.cli._common import echo, user_errors
from aelab.cli._settings import CONFIG_HELP, SET_HELP, Listing, gather, settings_command


def _listing() -> Listing:
    from aelab.tasks import EmbedOptions

    return Listing(EmbedOptions)


#: Old flags whose value had another form on the command line.
_CONVERT: dict[str, Any] = {
    "classes": lambda v: ("classes", _parse("parse_class_list", v)),
    "ratio": lambda v: ("ratio", _parse("parse_ratio", v)),
}


def _parse(name: str, text: str) -> Any:
    import aelab.data

    return getattr(aelab.data, name)(text)


def embed(
    ctx: typer.Context,
    data: str = typer.Argument(
        ...,
        help="Image folder, .npy/.npz file, or fashion-mnist[:train|:test] "
        "(--skip-bad skips unreadable images, listed).",
    ),
    ckpt: Path = typer.Option(
        ..., "--ckpt", help="Run folder of a checkpoint (e.g. RUN/pretrain or RUN/finetune)."
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="A file ending in .npz (z, ids, index, and labels/class_names when known), or a "
        "folder: latents written in shards as they are computed (z-00000.npy, ids-, labels-, "
        "manifest.json last), never all in memory; `aelab cluster FOLDER` reads them.",
    ),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Read images batch by batch (a folder decoded on access, a uint8 .npy of the "
        "checkpoint's shape memory-mapped) instead of loading them all.",
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="Labels file (.npy or .csv) for array data."
    ),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier output (.npz file or shards in the folder)."
    ),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    skip_bad: bool = typer.Option(False, "--skip-bad", hidden=True),
    shard_size: int | None = typer.Option(None, "--shard-size", hidden=True),
    classes: str | None = typer.Option(None, "--classes", hidden=True),
    ratio: str | None = typer.Option(None, "--ratio", hidden=True),
    n: int | None = typer.Option(None, "--n", hidden=True),
    seed: int | None = typer.Option(None, "--seed", hidden=True),
    batch_size: int | None = typer.Option(None, "--batch-size", hidden=True),
) -> None:
    """Encode images into latent vectors for `aelab cluster` (and notebooks).

    --out lat.npz writes one file; --out FOLDER writes shards batch by batch (with
    --stream, memory stays bounded however many images there are). A class
    subset in a ratio: --set classes=Coat,Bag --set ratio=2,1 --set n=3000.
    """
    with user_errors():
        from aelab.tasks import Source, run_embed

        given = gather(ctx, _listing(), {}, set_, config, _CONVERT)
        res = run_embed(
            Source(data, None if labels is None else str(labels), skip_bad), ckpt, out,
            stream=stream, overwrite=overwrite, device=device, **given,
        )  # fmt: skip
    where = str(res.path)
    if res.shards is not None:
        where += f" ({res.shards} shard{'s' if res.shards != 1 else ''})"
    echo(f"wrote {where}: {res.n} latent vectors of dimension {res.latent_dim}")
    if res.class_counts:
        echo("classes: " + ", ".join(f"{k} {v}" for k, v in res.class_counts.items()))


def register(app: typer.Typer) -> None:
    app.command("embed", cls=settings_command(_listing))(embed)
