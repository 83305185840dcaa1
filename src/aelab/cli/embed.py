"""``aelab embed``: latent vectors of images, optionally of a class subset in a given ratio."""

from __future__ import annotations

from pathlib import Path

import typer

from aelab.cli._common import echo, user_errors


def embed(
    data: str = typer.Argument(
        ..., help="Image folder, .npy/.npz file, or fashion-mnist[:train|:test]."
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
    shard_size: int | None = typer.Option(
        None,
        "--shard-size",
        min=1,
        help="Rows per shard when --out is a folder (default: about 128 MiB of latents each).",
    ),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Read images batch by batch (a folder decoded on access, a uint8 .npy of the "
        "checkpoint's shape memory-mapped) instead of loading them all.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier output (.npz file or shards in the folder)."
    ),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Keep these classes, by index or name (0,1,2 or Coat,Bag); relabelled 0..k-1 in this order.",
    ),
    ratio: str | None = typer.Option(
        None, "--ratio", help="Class sizes in this ratio, e.g. 2:1:1 (with --classes)."
    ),
    n: int | None = typer.Option(
        None,
        "--n",
        min=1,
        help="Images in all (per --ratio, or a random sample without --classes).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampling."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per forward pass."),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."
    ),
    labels: Path | None = typer.Option(
        None, "--labels", help="Labels file (.npy or .csv) for array data."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip unreadable images (listed) instead of failing."
    ),
) -> None:
    """Encode images into latent vectors for `aelab cluster` (and notebooks).

    --out lat.npz writes one file; --out FOLDER writes shards batch by batch (with
    --stream, memory stays bounded however many images there are).
    """
    with user_errors():
        from aelab.data import parse_class_list, parse_ratio
        from aelab.tasks import Source, run_embed

        res = run_embed(
            Source(data, None if labels is None else str(labels), skip_bad), ckpt, out,
            classes=None if classes is None else parse_class_list(classes),
            ratio=None if ratio is None else parse_ratio(ratio), n=n, seed=seed,
            batch_size=batch_size, shard_size=shard_size, stream=stream, overwrite=overwrite,
            device=device,
        )  # fmt: skip
    where = str(res.path)
    if res.shards is not None:
        where += f" ({res.shards} shard{'s' if res.shards != 1 else ''})"
    echo(f"wrote {where}: {res.n} latent vectors of dimension {res.latent_dim}")
    if res.class_counts:
        echo("classes: " + ", ".join(f"{k} {v}" for k, v in res.class_counts.items()))


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
