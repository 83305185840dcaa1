"""The embedding task: latent vectors of images, as one ``.npz`` or as shards written batch by batch."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aelab.runtime import progress_bars
from aelab.tasks.options import with_overrides
from aelab.tasks.outputs import output_file, output_folder
from aelab.tasks.results import Record
from aelab.tasks.source import DataArg, sample_subset

__all__ = ["EmbedOptions", "EmbedResult", "run_embed", "write_latents"]

PathLike = str | os.PathLike[str]

#: Show the embedding progress bar from this many images on.
_PROGRESS_MIN = 10_000


@dataclass
class EmbedOptions:
    """Settings of :func:`run_embed`.

    Parameters
    ----------
    classes : list of int or str, optional
        Keep only these classes (by index or name), relabelled 0..k-1 in this order.
    ratio : list of float, optional
        Class sizes in this ratio (e.g. ``[2, 1, 1]``); needs ``classes``.
    n : int, optional
        Images in all: per ``ratio`` (or equally) with ``classes``, else a seeded sample.
    seed : int
        Seed of the sampling.
    batch_size : int
        Images per forward pass.
    shard_size : int, optional
        Rows per shard when the output is a folder (default about 128 MiB of latents).
    """

    classes: list[int | str] | None = None
    ratio: list[float] | None = None
    n: int | None = None
    seed: int = 0
    batch_size: int = 256
    shard_size: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.shard_size is not None and self.shard_size < 1:
            raise ValueError(f"shard_size must be a positive number of rows, got {self.shard_size}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


@dataclass(frozen=True)
class EmbedResult(Record):
    """What :func:`run_embed` wrote.

    Attributes
    ----------
    path : Path
        The ``.npz`` file, or the shard folder's manifest.
    n : int
        Latent vectors written.
    latent_dim : int
    shards : int or None
        Shards written (``None`` for one ``.npz``).
    class_counts : dict of str to int
        Images per class (empty without labels).
    """

    path: Path
    n: int
    latent_dim: int
    shards: int | None = None
    class_counts: dict[str, int] = field(default_factory=dict)


def write_latents(
    path: PathLike, z: np.ndarray, rows: Any, *, index: np.ndarray | None = None
) -> Path:
    """Save latents with ids (and labels and class names when known) as ``.npz``.

    Keys: ``z`` (n_samples, latent_dim), ``ids``, optionally ``labels``,
    ``class_names`` and ``index`` (each row's position in the source data).
    ``aelab cluster`` reads ``z`` by default and ``labels`` as the true classes.
    """
    from aelab.files import write_npz

    if len(z) != len(rows):
        raise ValueError(f"{len(z)} latent vectors for {len(rows)} images")
    arrays: dict[str, np.ndarray] = {
        "z": z.astype(np.float32),
        "ids": np.asarray(list(rows.ids), dtype=str),
    }
    if index is not None:
        arrays["index"] = np.asarray(index, dtype=np.int64)
    if rows.labels is not None:
        arrays["labels"] = rows.labels.numpy()
    if rows.class_names is not None:
        arrays["class_names"] = np.asarray(rows.class_names, dtype=str)
    return write_npz(path, **arrays)


def _claim(out: Path, opts: EmbedOptions, inputs: list[Any], overwrite: bool) -> Any:
    """The claim of ``out``: one ``.npz`` file, else a shard folder; refuse what cannot be written."""
    from aelab.data.shards import MANIFEST

    suffix = out.suffix.lower()
    if suffix == ".npy":
        raise ValueError(
            f"--out {out}: give a .npz file (all latents in one file) or a folder (shards)"
        )
    if suffix == ".npz":
        if opts.shard_size is not None:
            raise ValueError(
                f"--shard-size writes a folder of shards; give --out a folder, not {out.name}"
            )
        return output_file(out, "embed", inputs=inputs, overwrite=overwrite)
    return output_folder(out, "embed", names=[MANIFEST], inputs=inputs, overwrite=overwrite)


def _rows(data: DataArg, ckpt: PathLike, stream: bool, device: str) -> tuple[Any, Any]:
    """The checkpoint's model and the images at its shape (in memory or read batch by batch)."""
    from aelab.data import ImageRows
    from aelab.tasks.modeling import model_shape, open_checkpoint
    from aelab.tasks.source import stream_images

    if stream:
        opened = open_checkpoint(ckpt, device=device)
        return opened.model, ImageRows(stream_images(data, shape=model_shape(opened.model)))
    opened = open_checkpoint(ckpt, data, device=device, progress=False)
    return opened.model, opened.data


def run_embed(
    data: DataArg,
    ckpt: PathLike,
    out: PathLike,
    config: EmbedOptions | None = None,
    *,
    stream: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    progress: bool = True,
    **overrides: Any,
) -> EmbedResult:
    """Encode images with a checkpoint's encoder; save the latents as one ``.npz`` or as shards.

    Parameters
    ----------
    data : DataArg
        Images (brought to the checkpoint's size and channels).
    ckpt : path
        A run folder of :func:`~aelab.tasks.run_pretrain` or :func:`~aelab.tasks.run_finetune`.
    out : path
        A path ending in ``.npz``: one file (see :func:`write_latents`). Any
        other path: a folder of shards (:class:`aelab.data.shards.ShardWriter`),
        written batch by batch so memory never holds all the latents.
    config : EmbedOptions, optional
        Sampling and batching settings; ``overrides`` change fields of it.
    stream : bool
        Read the images batch by batch; sampling options then read only the labels.
    overwrite : bool
        Replace an earlier output.
    device : str
    progress : bool
        Show a progress bar from 10,000 images on.

    Returns
    -------
    EmbedResult
    """
    opts = with_overrides(config or EmbedOptions(), overrides)
    out = Path(out)
    with _claim(out, opts, [ckpt, data], overwrite):
        return _embed(data, ckpt, out, opts, stream, overwrite, device, progress)


def _embed(data: DataArg, ckpt: PathLike, out: Path, opts: EmbedOptions, stream: bool,
           overwrite: bool, device: str, progress: bool) -> EmbedResult:  # fmt: skip
    from tqdm.auto import tqdm

    from aelab.data.shards import ShardWriter
    from aelab.files import read_json
    from aelab.training import iter_encode

    to_file = out.suffix.lower() == ".npz"
    model, rows = _rows(data, ckpt, stream, device)
    rows, index = sample_subset(
        rows, classes=opts.classes, ratio=opts.ratio, n=opts.n, seed=opts.seed
    )
    total, ids = len(rows), rows.ids  # ids once: a folder stream builds its list on every call
    ys = None if rows.labels is None else rows.labels.numpy()
    blocks = tqdm(
        iter_encode(model, rows, batch_size=opts.batch_size, device=device),
        total=math.ceil(total / opts.batch_size), desc="embedding", unit="batch", leave=False,
        disable=not progress_bars(progress and total >= _PROGRESS_MIN),
    )  # fmt: skip
    shards = None
    if to_file:
        z = np.concatenate([z for _, z in blocks])
        path = write_latents(out, z, rows, index=index)
    else:
        with ShardWriter(out, shard_size=opts.shard_size, overwrite=overwrite) as writer:
            for start, z in blocks:
                stop = start + len(z)
                writer.write(z, ids=ids[start:stop], labels=None if ys is None else ys[start:stop])
            path = writer.close(class_names=rows.class_names)
        shards = len(read_json(path)["shards"])
    counts = {}
    if ys is not None:
        k = rows.num_classes or int(ys.max()) + 1
        counts = {rows.class_name(c): int(v) for c, v in enumerate(np.bincount(ys, minlength=k))}
    return EmbedResult(path=Path(path), n=total, latent_dim=int(z.shape[1]), shards=shards,
                       class_counts=counts)  # fmt: skip
