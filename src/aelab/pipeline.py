"""The steps users run, as importable functions: the CLI and the study both call these.

Each function takes plain values (data specs, paths, numbers), does one step of
the workflow end to end (load data at the model's size, build or load the
model, train or infer, write files) and returns what it produced.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aelab.files import read_json, write_json, write_npy, write_npz, write_text
from aelab.data.dataset import ImageDataset
from aelab.data.streaming import ImageRows


@dataclass
class ModelData:
    """A model (or the shape it wants) with a dataset conformed to it."""

    model: Any
    model_name: str
    data: ImageDataset
    meta: dict[str, Any]


def load_for_checkpoint(
    data: str | Path | ImageDataset,
    ckpt: str | Path,
    *,
    skip_bad: bool = False,
    device: str = "auto",
    labels: str | Path | None = None,
) -> ModelData:
    """Load a checkpoint and a dataset brought to its image size and channels.

    Parameters
    ----------
    data : data spec or ImageDataset
        A folder, ``.npy``/``.npz`` file, ``fashion-mnist[:split]``, or data in memory.
    ckpt : path
        A run folder written by :func:`pretrain` or :func:`finetune`.
    """
    from aelab.data import conform, load_dataset
    from aelab.training import load_model, read_checkpoint_meta

    meta = read_checkpoint_meta(ckpt)
    model, meta = load_model(ckpt, device=device)
    cfg = model.config
    if isinstance(data, ImageDataset):
        ds = conform(data, image_size=cfg.image_size, channels=cfg.in_channels)
    else:
        ds = load_dataset(
            data,
            labels=labels,
            image_size=cfg.image_size,
            channels=cfg.in_channels,
            skip_bad=skip_bad,
        )
    return ModelData(model=model, model_name=meta["model"], data=ds, meta=meta)


def model_for_data(
    ds: ImageDataset, model: str = "auto", *, num_classes: int | None = None, **overrides: Any
) -> ModelData:
    """Build a fresh model for ``ds`` and conform ``ds`` to it.

    ``model="auto"`` picks the ``convae`` family member that suits the images
    (see :func:`aelab.models.auto_model_spec`).
    """
    from aelab.data import conform
    from aelab.models import auto_model_spec, create_model

    if model == "auto":
        name, auto = auto_model_spec(*ds.image_shape)
    else:
        name, auto = model, {}
    kw = {**auto, **overrides}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    net = create_model(name, **kw)
    cfg = net.config
    ds = conform(ds, image_size=cfg.image_size, channels=cfg.in_channels)
    return ModelData(
        model=net, model_name=name, data=ds, meta={"model": name, "config": cfg.to_dict()}
    )


def write_submission(
    path: str | Path, ids: list[str], labels: np.ndarray, class_names: list[str] | None
) -> Path:
    """Write ``id,label`` rows in input order; labels as class names when known."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "label"])
    for i, k in zip(ids, labels.tolist(), strict=True):
        w.writerow([i, class_names[k] if class_names else k])
    return write_text(path, buf.getvalue())


def write_latents(
    path: str | Path,
    z: np.ndarray,
    ds: ImageDataset | ImageRows,
    *,
    index: np.ndarray | None = None,
) -> Path:
    """Save latents with ids (and labels and class names when known) as ``.npz``.

    Keys: ``z`` (n_samples, latent_dim), ``ids``, optionally ``labels``,
    ``class_names`` and ``index`` (each row's position in the source data).
    ``aelab cluster`` reads ``z`` by default and ``labels`` as the true classes.
    """
    if len(z) != len(ds):
        raise ValueError(f"{len(z)} latent vectors for {len(ds)} images")
    arrays: dict[str, np.ndarray] = {
        "z": z.astype(np.float32),
        "ids": np.asarray(ds.ids, dtype=str),
    }
    if index is not None:
        arrays["index"] = np.asarray(index, dtype=np.int64)
    if ds.labels is not None:
        arrays["labels"] = ds.labels.numpy()
    if ds.class_names is not None:
        arrays["class_names"] = np.asarray(ds.class_names, dtype=str)
    return write_npz(path, **arrays)


def sample_subset(
    ds: ImageDataset | ImageRows,
    *,
    classes: list[int | str] | None = None,
    ratio: list[float] | None = None,
    n: int | None = None,
    seed: int = 0,
) -> tuple[ImageDataset | ImageRows, np.ndarray]:
    """A seeded subset: some classes in a ratio (relabelled 0..k-1), or ``n`` random images.

    Parameters
    ----------
    ds : ImageDataset or ImageRows
        Images in memory, or a view read batch by batch (then only the labels
        are read and the subset is a view too).
    classes : list of int or str, optional
        Keep these classes (see :func:`aelab.data.select_classes`), renumbered
        0..k-1 in this order with matching class names.
    ratio : list of float, optional
        Their relative sizes; needs ``classes``.
    n : int, optional
        Images in all (per ``ratio``, equal shares, or a random sample without ``classes``).
    seed : int

    Returns
    -------
    subset : ImageDataset or ImageRows
        Rows in source order; ids are those of ``ds``.
    index : ndarray of shape (n_subset,), int64
        Each row's position in ``ds``.
    """
    from aelab.data import select_classes

    if ratio is not None and classes is None:
        raise ValueError("--ratio needs --classes (the classes the ratio refers to)")
    if n is not None and n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if classes is not None:
        if ds.labels is None:
            raise ValueError(
                "--classes needs labeled data (class subfolders, labels in the .npz, or --labels)"
            )
        return select_classes(
            ds, classes, ratio=ratio, n=n, seed=seed, relabel=True, return_index=True
        )  # type: ignore[return-value]
    if n is not None and n < len(ds):
        index = np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
        return ds.subset(index), index
    return ds, np.arange(len(ds), dtype=np.int64)


def run_deepcluster(
    data: str | Path | ImageDataset,
    init: str | Path,
    out: str | Path,
    *,
    k: int,
    method: str = "ekm",
    name: str | None = None,
    rounds: int = 10,
    epochs_per_round: int = 1,
    gamma: float = 1.0,
    alpha: float | str = "auto",
    space: str = "l2",
    n_components: int = 32,
    lr: float = 1e-4,
    batch_size: int = 128,
    classes: list[int | str] | None = None,
    ratio: list[float] | None = None,
    n: int | None = None,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    skip_bad: bool = False,
    labels: str | Path | None = None,
    progress: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Deep clustering from a pre-trained checkpoint into ``out/name``.

    Loads ``init``, optionally samples a subset (as :func:`sample_subset`),
    runs :func:`aelab.training.deepcluster.deep_cluster` and writes into
    ``out/name`` (default ``deepcluster-<method>``): the fine-tuned checkpoint
    (usable by ``aelab embed --ckpt``), ``labels.csv`` (``id,cluster``, and
    ``label`` when known), ``centroids.npy`` (clustering space),
    ``rounds.csv`` (one row per round) and ``summary.json``.

    Returns
    -------
    dict
        ``run_dir``, ``initial``, ``final``, ``history``, ``result`` (the DeepClusterResult).
    """
    from aelab.training import save_checkpoint
    from aelab.training.deepcluster import METHODS, deep_cluster, result_to_dict

    if method not in METHODS:
        raise ValueError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    run_dir = Path(out) / (name or f"deepcluster-{method}")
    if (run_dir / "model.json").exists() and not overwrite:
        raise ValueError(
            f"{run_dir} already holds a run; add --overwrite or choose another --out/--name"
        )
    md = load_for_checkpoint(data, init, skip_bad=skip_bad, device=device, labels=labels)
    ds, _ = sample_subset(md.data, classes=classes, ratio=ratio, n=n, seed=seed)
    model = md.model
    res = deep_cluster(
        model, ds, k=k, method=method, rounds=rounds, epochs_per_round=epochs_per_round,
        gamma=gamma, alpha=alpha, space=space, n_components=n_components, lr=lr,
        batch_size=batch_size, seed=seed, device=device, progress=progress, log=log,
    )  # fmt: skip
    save_checkpoint(run_dir, model.cpu(), model_name=md.model_name,
                    model_meta={"task": "deepcluster", "image_shape": list(ds.image_shape),
                                "class_names": md.meta.get("class_names")})  # fmt: skip
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    known = ds.labels is not None
    w.writerow(["id", "cluster", *(["label"] if known else [])])
    true = ds.labels.tolist() if known else [None] * len(ds)
    for i, c, t in zip(ds.ids, res.labels.tolist(), true, strict=True):
        w.writerow([i, c, *([ds.class_name(t)] if known else [])])
    write_text(run_dir / "labels.csv", buf.getvalue())
    write_npy(run_dir / "centroids.npy", res.centroids.astype(np.float32))
    cols: list[str] = []
    for row in res.history:
        cols += [c for c in row if c not in cols]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for row in res.history:
        w.writerow(
            [
                ":".join(map(str, row[c])) if isinstance(row.get(c), list) else row.get(c, "")
                for c in cols
            ]
        )
    write_text(run_dir / "rounds.csv", buf.getvalue())
    summary = {"data": str(data) if not isinstance(data, ImageDataset) else "<memory>", "init": str(init),
               "n_images": len(ds), **result_to_dict(res)}  # fmt: skip
    write_json(run_dir / "summary.json", summary)
    return {"run_dir": str(run_dir), "initial": res.initial, "final": res.final,
            "history": res.history, "result": res}  # fmt: skip


#: Show the embedding progress bar from this many images on.
_EMBED_PROGRESS_MIN = 10_000


def run_embed(
    data: str | Path | ImageDataset,
    ckpt: str | Path,
    out: str | Path,
    *,
    classes: list[int | str] | None = None,
    ratio: list[float] | None = None,
    n: int | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str = "auto",
    skip_bad: bool = False,
    labels: str | Path | None = None,
    shard_size: int | None = None,
    stream: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Encode images with a checkpoint's encoder; save the latents as one ``.npz`` or as shards.

    Parameters
    ----------
    data : data spec or ImageDataset
        Images (brought to the checkpoint's size and channels).
    ckpt : path
        A run folder of :func:`run_pretrain` or :func:`run_finetune`.
    out : path
        A path ending in ``.npz``: one file (keys of :func:`write_latents`,
        plus ``index``, each row's position in ``data``). Any other path: a
        folder of shards (:class:`aelab.data.shards.ShardWriter`: ``z-*.npy``,
        ``ids-*.npy``, ``labels-*.npy`` when labeled, ``manifest.json`` last),
        written batch by batch so memory holds one shard and one batch of
        latents, never all of them; ``aelab cluster`` reads the folder.
    classes : list of int or str, optional
        Keep only these classes (labels renumbered 0..k-1 in this order, with
        matching class names); see :func:`aelab.data.select_classes`.
    ratio : list of float, optional
        Class sizes in this ratio (e.g. ``[2, 1, 1]``); with ``n``, ``n``
        images in all. Needs ``classes``.
    n : int, optional
        Images in all: with ``classes``, taken per ``ratio`` (or equally);
        without, a seeded random sample of ``data``.
    seed : int
        Seed of the sampling.
    batch_size : int
        Images per forward pass.
    device : str
        ``"auto"`` uses CUDA when present.
    skip_bad, labels
        As for :func:`aelab.data.load_dataset`.
    shard_size : int, optional
        Rows per shard (a folder ``out`` only); default about 128 MiB of latents per shard.
    stream : bool
        Read the images batch by batch (see :func:`stream_for_model`): a
        folder is decoded at the checkpoint's size on access, a uint8 ``.npy``
        of the checkpoint's shape stays memory-mapped. Sampling options read
        only the labels.
    overwrite : bool
        Replace the shards of an earlier run in the folder ``out``.
    progress : bool
        Show a progress bar from 10,000 images on.

    Returns
    -------
    dict
        ``path`` (the ``.npz`` or the shard manifest), ``n``, ``latent_dim``,
        ``class_counts`` (when labeled), and ``z`` (the latents) for an ``.npz``
        or ``shards`` (their number) for a folder.
    """
    from tqdm.auto import tqdm

    from aelab.data.shards import MANIFEST, ShardWriter
    from aelab.training import iter_encode, load_model

    out = Path(out)
    to_file = out.suffix.lower() == ".npz"
    if out.suffix.lower() == ".npy":
        raise ValueError(
            f"--out {out}: give a .npz file (all latents in one file) or a folder (latents in shards)"
        )
    if to_file and shard_size is not None:
        raise ValueError(
            f"--shard-size writes a folder of shards; give --out a folder, not the file {out.name}"
        )
    if not to_file and out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the shards, or a .npz file")
    if shard_size is not None and (isinstance(shard_size, bool) or shard_size < 1):
        raise ValueError(f"--shard-size must be a positive number of rows, got {shard_size!r}")
    if not to_file and (out / MANIFEST).exists() and not overwrite:
        raise ValueError(
            f"--out {out} already holds shards ({MANIFEST}); add --overwrite or choose another folder"
        )
    if stream:
        if skip_bad:
            raise ValueError(
                "--skip-bad needs the eager loader (it drops files before encoding); "
                "clean the folder or drop --stream"
            )
        model, _ = load_model(ckpt, device=device)
        cfg = model.config
        shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
        rows: ImageDataset | ImageRows = ImageRows(_stream_source(data, shape=shape, labels=labels))
    else:
        md = load_for_checkpoint(data, ckpt, skip_bad=skip_bad, device=device, labels=labels)
        model, rows = md.model, md.data
    rows, index = sample_subset(rows, classes=classes, ratio=ratio, n=n, seed=seed)
    total = len(rows)
    ids = rows.ids  # once: a folder stream builds its id list on every call
    ys = None if rows.labels is None else rows.labels.numpy()
    blocks = tqdm(
        iter_encode(model, rows, batch_size=batch_size, device=device),
        total=math.ceil(total / batch_size), desc="embedding", unit="batch", leave=False,
        disable=not (progress and total >= _EMBED_PROGRESS_MIN),
    )  # fmt: skip
    res: dict[str, Any] = {"n": total}
    if to_file:
        z = np.concatenate([z for _, z in blocks])
        res.update(path=str(write_latents(out, z, rows, index=index)), z=z)
    else:
        with ShardWriter(out, shard_size=shard_size, overwrite=overwrite) as writer:
            for start, z in blocks:
                stop = start + len(z)
                writer.write(z, ids=ids[start:stop], labels=None if ys is None else ys[start:stop])
            manifest = writer.close(class_names=rows.class_names)
        res.update(path=str(manifest), shards=len(read_json(manifest)["shards"]))
    res["latent_dim"] = int(z.shape[1])
    if ys is not None:
        k = rows.num_classes or int(ys.max()) + 1
        res["class_counts"] = {
            rows.class_name(c): int(v) for c, v in enumerate(np.bincount(ys, minlength=k))
        }
    return res


def save_run_config(out_dir: str | Path, command: str, options: dict[str, Any]) -> Path:
    """Record the command and options a run was made with (``run.json``; rank 0 only)."""
    from aelab import __version__
    from aelab.training import distributed as dist_utils

    if not dist_utils.is_main():
        return Path(out_dir) / "run.json"

    return write_json(
        Path(out_dir) / "run.json", {"command": command, "aelab": __version__, "options": options}
    )


def _subsample(ds: ImageDataset, max_images: int, seed: int) -> ImageDataset:
    if max_images and len(ds) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=max_images, replace=False))
        return ds.subset(idx)
    return ds


def _stream_source(
    data: str | Path | ImageDataset,
    *,
    shape: tuple[int, int, int] | None = None,
    labels: str | Path | None = None,
) -> ImageDataset | Any:
    """``data`` as something read batch by batch: an ImageFolderStream or a memory-mapped set.

    With ``shape`` (channels, height, width) a folder is decoded at that size
    and an array must already have it.
    """
    from aelab.data import DataSpec, ImageFolderStream, load_dataset

    source: Any
    if isinstance(data, ImageDataset):
        source = data
    else:
        spec = DataSpec.parse(data)
        if labels is not None and spec.kind not in ("npy", "npz"):
            raise ValueError(f"--labels applies to .npy/.npz data, not to a {spec.kind}")
        if spec.kind == "folder":
            assert spec.path is not None
            source = ImageFolderStream(
                spec.path,
                image_size=None if shape is None else shape[1:],
                channels=None if shape is None else shape[0],
            )
        elif spec.kind == "npz":
            raise ValueError(
                f"{data}: an .npz archive is read into memory whole; save the images as .npy "
                "(np.save) to stream them, or drop --stream"
            )
        else:
            if spec.kind == "npy":
                assert spec.path is not None
                dtype = np.load(spec.path, mmap_mode="r", allow_pickle=False).dtype
                if dtype != np.uint8:
                    raise ValueError(
                        f"{data}: streaming reads a uint8 .npy as it is, this one holds {dtype}; "
                        "save it as uint8 (e.g. (a * 255).round().astype(np.uint8)) or drop --stream"
                    )
            source = load_dataset(data, labels=labels, progress=False)
    if shape is not None and tuple(source.image_shape) != tuple(shape):
        raise _stream_shape_error(data, source.image_shape, shape, "the model")
    return source


def _stream_shape_error(data: Any, got: Any, want: Any, who: str) -> ValueError:
    return ValueError(
        f"{data}: images are {'x'.join(map(str, got))} but {who} wants "
        f"{'x'.join(map(str, want))}; streaming reads the array as it is, so save it "
        "at the model's size and channels (uint8) or drop --stream"
    )


def stream_for_model(
    data: str | Path | ImageDataset,
    model: str = "auto",
    *,
    max_images: int = 0,
    seed: int = 0,
    model_overrides: dict[str, Any] | None = None,
) -> tuple[Any, str, Any]:
    """A fresh model and a view of ``data`` read batch by batch, never loaded whole.

    A folder becomes an :class:`~aelab.data.ImageFolderStream` decoded at the
    model's size; a ``.npy`` file stays a memory map and must already hold
    uint8 images of the model's shape (converting it would load it).

    Returns
    -------
    model : torch.nn.Module
    model_name : str
    rows : ImageRows
        All images (or ``max_images`` of them, chosen by ``seed``).
    """
    from aelab.data import ImageFolderStream
    from aelab.models import auto_model_spec, create_model

    source = _stream_source(data)
    shape = tuple(source.image_shape)
    name, auto = auto_model_spec(*shape) if model == "auto" else (model, {})
    net = create_model(name, **{**auto, **(model_overrides or {})})
    want = (net.config.in_channels, net.config.image_size, net.config.image_size)
    if shape != want:
        if not isinstance(source, ImageFolderStream):
            raise _stream_shape_error(data, shape, want, f"model {name!r}")
        source = _stream_source(data, shape=want)  # decoded at the model's size
    index = None
    if max_images and len(source) > max_images:
        index = np.sort(
            np.random.default_rng(seed).choice(len(source), size=max_images, replace=False)
        )
    return net, name, ImageRows(source, index)


def _augment(preset: str) -> Any:
    from aelab.data import make_augment

    return None if preset == "none" else make_augment(preset)


def run_pretrain(
    data: str | Path | ImageDataset,
    out: str | Path,
    *,
    model: str = "auto",
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-3,
    loss: str = "mse",
    augment: str = "none",
    mask_ratio: float = 0.0,
    val_fraction: float = 0.05,
    max_images: int = 0,
    amp: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    skip_bad: bool = False,
    progress: bool = True,
    model_overrides: dict[str, Any] | None = None,
    stream: bool = False,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Pre-train an autoencoder on ``data`` (labels ignored) into ``out/pretrain``.

    With ``stream`` the images are read batch by batch (see
    :func:`stream_for_model`), so memory does not grow with the dataset;
    ``num_workers`` processes read the batches ahead. The same call runs
    data-parallel under ``torchrun``.

    Returns
    -------
    dict
        ``run_dir``, ``history`` (per-epoch metrics), ``train_loss``, ``val_loss``.
    """
    from aelab.runtime import seed_everything
    from aelab.data import load_dataset, split_dataset, split_indices
    from aelab.training import PretrainConfig, pretrain

    if stream:
        if skip_bad:
            raise ValueError(
                "--skip-bad needs the eager loader (it drops files before training); "
                "clean the folder or drop --stream"
            )
        seed_everything(seed)
        net, net_name, rows = stream_for_model(
            data, model, max_images=max_images, seed=seed, model_overrides=model_overrides
        )
        _, rest, val_idx = split_indices(rows, val_fraction=val_fraction, seed=seed)
        rows.labels = None  # pre-training never sees labels
        train_part, val_part = rows.subset(rest), rows.subset(val_idx) if val_idx.size else None
    else:
        ds = data if isinstance(data, ImageDataset) else load_dataset(data, skip_bad=skip_bad)
        ds = _subsample(ds, max_images, seed)
        seed_everything(seed)
        md = model_for_data(ds, model, **(model_overrides or {}))
        net, net_name = md.model, md.model_name
        parts = split_dataset(md.data, val_fraction=val_fraction, seed=seed)
        train_part, val_part = parts.unlabeled, parts.val
    config = PretrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, mask_ratio=mask_ratio, amp=amp,
        seed=seed, device=device, progress=progress,
    )  # fmt: skip
    run_dir = Path(out) / "pretrain"
    result = pretrain(
        net, train_part, val=val_part, config=config, out_dir=run_dir,
        augment=_augment(augment), resume=resume, overwrite=overwrite, model_name=net_name,
        num_workers=num_workers,
    )  # fmt: skip
    save_run_config(run_dir, "pretrain", {"data": str(data) if not isinstance(data, ImageDataset) else "<memory>",
                                          "model": net_name, "augment": augment, "max_images": max_images,
                                          "val_fraction": val_fraction, "config": vars(config),
                                          "stream": stream})  # fmt: skip
    last = result.history[-1] if result.history else {}
    return {
        "run_dir": str(run_dir),
        "history": result.history,
        "train_loss": float(last.get("train_loss", float("nan"))),
        "val_loss": last.get("val_loss"),
        "n_train": len(train_part),
        "n_val": 0 if val_part is None else len(val_part),
    }


def run_finetune(
    data: str | Path | ImageDataset,
    out: str | Path,
    *,
    init: str | Path | None = None,
    model: str = "auto",
    name: str = "finetune",
    labels_per_class: int = 0,
    val_per_class: int = 0,
    val_fraction: float = 0.1,
    recipe: str = "default",
    augment: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    recon_weight: float | None = None,
    freeze_encoder_epochs: int | None = None,
    encoder_lr_mult: float | None = None,
    label_smoothing: float | None = None,
    semi: str | None = None,
    unlabeled_weight: float | None = None,
    threshold: float | None = None,
    unlabeled_ratio: int | None = None,
    distribution_alignment: bool | None = None,
    ema_decay: float | None = None,
    patience: int | None = None,
    amp: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    skip_bad: bool = False,
    labels: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a classifier on labeled ``data`` into ``out/name``, from ``init`` or from scratch.

    The settings start from the named ``recipe`` (see
    :data:`aelab.training.FINETUNE_RECIPES`; ``"default"`` is FixMatch on the
    unlabeled images, ``"plain"`` supervised fine-tuning only); every option
    left at ``None`` keeps the recipe's value. Recipes that learn from
    unlabeled images get every image not held out for validation.

    Returns
    -------
    dict
        ``run_dir``, ``history``, ``best_val_acc``, ``best_epoch``, split sizes.
    """
    from aelab.runtime import seed_everything
    from aelab.data import conform, load_dataset, split_dataset
    from aelab.training import finetune, finetune_recipe, load_model

    ds = (
        data
        if isinstance(data, ImageDataset)
        else load_dataset(data, labels=labels, skip_bad=skip_bad)
    )
    if ds.labels is None:
        raise ValueError(
            "fine-tuning needs labels: give a folder with one subfolder per class, "
            "an .npz with a labels array, or --labels FILE"
        )
    seed_everything(seed)
    if init is not None:
        net, meta = load_model(init, device="cpu")
        model_name = meta["model"]
        cfg = net.config
        ds = conform(ds, image_size=cfg.image_size, channels=cfg.in_channels)
    else:
        md = model_for_data(ds, model, num_classes=ds.num_classes)
        net, model_name, ds = md.model, md.model_name, md.data
    parts = split_dataset(
        ds,
        labels_per_class=labels_per_class or None,
        val_per_class=val_per_class or None,
        val_fraction=val_fraction,
        seed=seed,
    )
    config, augment = finetune_recipe(
        recipe, augment=augment, epochs=epochs, batch_size=batch_size, lr=lr,
        recon_weight=recon_weight, freeze_encoder_epochs=freeze_encoder_epochs,
        encoder_lr_mult=encoder_lr_mult, label_smoothing=label_smoothing, semi=semi,
        unlabeled_weight=unlabeled_weight, threshold=threshold, unlabeled_ratio=unlabeled_ratio,
        distribution_alignment=distribution_alignment, ema_decay=ema_decay, patience=patience, amp=amp, seed=seed, device=device,
        progress=progress,
    )  # fmt: skip
    run_dir = Path(out) / name
    result = finetune(
        net, parts.labeled, val=parts.val,
        unlabeled=parts.unlabeled if config.uses_unlabeled else None,
        config=config, out_dir=run_dir, augment=_augment(augment), resume=resume,
        overwrite=overwrite, model_name=model_name,
    )  # fmt: skip
    save_run_config(run_dir, "finetune", {"data": str(data) if not isinstance(data, ImageDataset) else "<memory>",
                                          "init": None if init is None else str(init), "model": model_name,
                                          "recipe": recipe, "augment": augment,
                                          "labels_per_class": labels_per_class,
                                          "val_per_class": val_per_class, "config": vars(config),
                                          "splits": parts.summary()})  # fmt: skip
    val_accs = [r["val_acc"] for r in result.history if "val_acc" in r]
    return {
        "run_dir": str(run_dir),
        "history": result.history,
        "best_val_acc": max(val_accs) if val_accs else None,
        "best_epoch": result.best_epoch,
        "splits": parts.summary(),
        "model": net,
    }


def run_predict(data: str | Path | ImageDataset, ckpt: str | Path, out: str | Path, *, batch_size: int = 256,
                device: str = "auto", skip_bad: bool = False) -> dict[str, Any]:  # fmt: skip
    """Predict every image of ``data`` with a fine-tuned checkpoint; write ``id,label`` to ``out``."""
    from aelab.training import predict

    md = load_for_checkpoint(data, ckpt, skip_bad=skip_bad, device=device)
    pred, probs = predict(md.model, md.data, batch_size=batch_size, device=device)
    names = md.meta.get("class_names")
    path = write_submission(out, md.data.ids, pred, names)
    return {"path": str(path), "n": len(pred), "labels": pred, "probs": probs}


def run_evaluate(data: str | Path | ImageDataset, ckpt: str | Path, *, out: str | Path | None = None,
                 labels: str | Path | None = None, device: str = "auto", skip_bad: bool = False) -> dict[str, Any]:  # fmt: skip
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on labeled ``data``."""
    from aelab.training import evaluate

    md = load_for_checkpoint(data, ckpt, skip_bad=skip_bad, device=device, labels=labels)
    if md.data.labels is None:
        raise ValueError(
            "evaluation needs labeled data (class subfolders, labels in the .npz, or --labels)"
        )
    res = evaluate(md.model, md.data, device=device)
    k = res["confusion_matrix"].shape[0]
    names = md.meta.get("class_names") or md.data.class_names or [str(i) for i in range(k)]
    res = {
        "accuracy": res["accuracy"],
        "n_samples": res["n_samples"],
        "class_names": list(names)[:k],
        "per_class_accuracy": [float(v) for v in res["per_class_accuracy"]],
        "confusion_matrix": res["confusion_matrix"].tolist(),
    }
    if out is not None:
        write_json(out, res)
    return res


def run_reconstruct(data: str | Path | ImageDataset, ckpts: list[str | Path] | str | Path, out: str | Path, *,
                    n: int = 16, seed: int = 0, device: str = "auto", skip_bad: bool = False,
                    titles: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A PNG grid: ``n`` originals above their reconstructions by each checkpoint."""
    from aelab import viz
    from aelab.training import reconstruct

    ckpts = [ckpts] if isinstance(ckpts, str | Path) else list(ckpts)
    if not ckpts:
        raise ValueError("give at least one checkpoint")
    first = load_for_checkpoint(data, ckpts[0], skip_bad=skip_bad, device=device)
    idx = np.sort(
        np.random.default_rng(seed).choice(
            len(first.data), size=min(n, len(first.data)), replace=False
        )
    )
    sample = first.data.subset(idx)
    rows, mses = [sample.images], []
    for i, ck in enumerate(ckpts):
        md = first if i == 0 else load_for_checkpoint(sample, ck, device=device)
        if md.data.image_shape != sample.image_shape:
            raise ValueError(
                f"{ck} expects images of shape {md.data.image_shape}, the first checkpoint {sample.image_shape}"
            )
        r = reconstruct(md.model, sample.images, device=device)
        rows.append(r)
        mses.append(float((r - sample.images.float() / 255).square().mean()))
    row_titles = ["original", *(titles or [Path(c).name for c in ckpts])]
    fig = viz.image_grid([np.asarray(r) for r in rows], row_titles=row_titles, max_cols=n)
    path = viz.save_figure(fig, out)
    return {"path": str(path), "n": len(sample), "mse": mses}


def _class_index(ds: ImageDataset, cls: str | int) -> int:
    """Index of a class given by index or name."""
    if ds.labels is None:
        raise ValueError("a class was named, but this data has no labels")
    names = ds.class_names or []
    if isinstance(cls, str) and cls in names:
        return names.index(cls)
    try:
        k = int(cls)
    except ValueError:
        raise ValueError(
            f"unknown class {cls!r}; classes are: {', '.join(names) or 'indices only'}"
        ) from None
    if not 0 <= k < (ds.num_classes or 0):
        raise ValueError(f"class {k} out of range; this data has {ds.num_classes} classes")
    return k


def split_by_class(ds: ImageDataset, classes: list[str | int]) -> tuple[ImageDataset, ImageDataset]:
    """The images of ``classes`` and the images of every other class."""
    keep = [_class_index(ds, c) for c in classes]
    mask = np.isin(ds.labels.numpy(), keep)
    return ds.subset(np.flatnonzero(mask)), ds.subset(np.flatnonzero(~mask))


def _load(spec: str | Path | ImageDataset) -> ImageDataset:
    from aelab.data import load_dataset

    return spec if isinstance(spec, ImageDataset) else load_dataset(spec)


def run_anomaly_fit(data: str | Path | ImageDataset, out: str | Path, *, normal_class: str | int | None = None,
                    model: str = "auto", epochs: int = 10, batch_size: int = 128, lr: float = 2e-3,
                    score: str = "mse", threshold: str = "fpr:0.05", latent_dim: int = 0,
                    calibration_fraction: float = 0.2, k: int = 5, max_images: int = 0, seed: int = 0,
                    device: str = "auto", progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train a :class:`~aelab.anomaly.ReconstructionDetector` on normal images; save it to ``out``.

    With ``normal_class`` only that class (index or name) of a labeled ``data``
    is used. Returns the detector, its folder, the threshold and the training history.
    """
    from aelab.anomaly import ReconstructionDetector

    ds = _load(data)
    if normal_class is not None:
        ds, _ = split_by_class(ds, [normal_class])
        if len(ds) == 0:
            raise ValueError(f"no normal images: class {normal_class!r} has no images in {data}")
    ds = _subsample(ds, max_images, seed)
    if len(ds) == 0:
        raise ValueError(f"no normal images to train on in {data}")
    det = ReconstructionDetector(
        model=model, model_overrides={"latent_dim": latent_dim} if latent_dim else None, score=score,
        threshold=threshold, calibration_fraction=calibration_fraction, epochs=epochs,
        batch_size=batch_size, lr=lr, k=k, device=device, random_state=seed, verbose=progress,
    )  # fmt: skip
    det.fit(ds)
    from aelab.training import distributed as dist_utils

    # Every rank holds the same trained detector; one writes it.
    path = det.save(out) if dist_utils.is_main() else Path(out)
    dist_utils.barrier()
    return {"path": str(path), "n_train": len(det.decision_scores_), "threshold": det.threshold_,
            "rule": str(det.threshold_rule_), "history": det.history_, "detector": det}  # fmt: skip


def run_anomaly_score(data: str | Path | ImageDataset, detector: str | Path, out: str | Path, *,
                      device: str = "auto") -> dict[str, Any]:  # fmt: skip
    """Score images with a saved detector; write ``id,score,is_anomaly``."""
    from aelab.anomaly import ReconstructionDetector

    det = ReconstructionDetector.load(detector, device=device)
    ds = _load(data)
    s = det.decision_function(ds)
    flag = (s > det.threshold_).astype(int)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "score", "is_anomaly"])
    for i, v, f in zip(ds.ids, s.tolist(), flag.tolist(), strict=True):
        w.writerow([i, f"{v:.8g}", f])
    path = write_text(out, buf.getvalue())
    return {
        "path": str(path),
        "n": len(s),
        "n_anomalies": int(flag.sum()),
        "threshold": det.threshold_,
        "scores": s,
    }


def anomaly_figures(
    det: Any,
    normal: ImageDataset,
    anomalous: ImageDataset,
    n_show: int = 8,
    *,
    scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """ROC curve, score histogram, and image/reconstruction/error-map grids of a detector.

    ``scores``, when given, are the detector's scores of ``normal`` and
    ``anomalous`` (so they are not computed twice). Returns a dict of name ->
    matplotlib Figure, plus the two score arrays under ``"_scores"``.
    """
    from aelab import viz

    if scores is None:
        scores = det.decision_function(normal), det.decision_function(anomalous)
    s_n, s_a = scores
    y = np.r_[np.zeros(len(s_n)), np.ones(len(s_a))]
    figs: dict[str, Any] = {
        "roc": viz.roc_curve_plot(y, np.r_[s_n, s_a], label=f"{det.score} score"),
        "histogram": viz.score_histogram(s_n, s_a, threshold=det.threshold_),
    }
    both = [normal, anomalous]
    scores = np.r_[s_n, s_a]
    order = np.argsort(scores)

    def pick(idx: np.ndarray) -> ImageDataset:
        rows = [(0, i) if i < len(s_n) else (1, i - len(s_n)) for i in idx.tolist()]
        imgs = [both[src].images[j] for src, j in rows]
        ids = [both[src].ids[j] for src, j in rows]
        import torch

        return ImageDataset(images=torch.stack(imgs), labels=None, ids=ids)

    for name, idx in (
        ("most_anomalous", order[::-1][:n_show]),
        ("least_anomalous", order[:n_show]),
    ):
        sub = pick(idx)
        recon, maps = det.score_maps(sub)
        titles = [f"{scores[i]:.4g}" for i in idx]
        figs[name] = viz.image_grid(
            [sub.images.numpy(), recon, maps], row_titles=["image", "reconstruction", "error"],
            row_cmaps=[None, None, "inferno"], col_titles=titles, max_cols=n_show,
        )  # fmt: skip
    figs["_scores"] = (s_n, s_a)
    return figs


def run_anomaly_eval(detector: str | Path | Any, normal: str | Path | ImageDataset,
                     anomalous: str | Path | ImageDataset, out: str | Path, *,
                     normal_class: str | int | None = None, anomalous_class: str | None = None,
                     max_images: int = 0, seed: int = 0, device: str = "auto") -> dict[str, Any]:  # fmt: skip
    """Evaluate a detector on normal and anomalous images; write metrics and figures to ``out``.

    With ``normal_class``, the normal images are that class of ``normal``; the
    anomalous ones are ``anomalous_class`` (comma-separated) of ``anomalous``,
    or by default every other class.
    """
    from aelab import viz
    from aelab.anomaly import ReconstructionDetector
    from aelab.data.splits import parse_class_list

    det = (
        detector
        if isinstance(detector, ReconstructionDetector)
        else ReconstructionDetector.load(detector, device=device)
    )
    n_src = _load(normal)
    same = anomalous is normal or (
        not isinstance(normal, ImageDataset) and str(anomalous) == str(normal)
    )
    a_src = n_src if same else _load(anomalous)
    n_ds, rest = (
        split_by_class(n_src, [normal_class]) if normal_class is not None else (n_src, None)
    )
    if anomalous_class is not None:
        a_ds, _ = split_by_class(a_src, parse_class_list(anomalous_class))
    elif same and rest is not None:
        a_ds = rest  # one labeled source: the other classes are the anomalies
    elif same:
        raise ValueError(
            "--normal and --anomalous are the same data; give --normal-class or --anomalous-class"
        )
    else:
        a_ds = a_src
    n_ds, a_ds = _subsample(n_ds, max_images, seed), _subsample(a_ds, max_images, seed + 1)
    metrics, s_n, s_a = det.evaluate(n_ds, a_ds, return_scores=True)
    figs = anomaly_figures(det, n_ds, a_ds, scores=(s_n, s_a))
    out = Path(out)
    files = [str(write_json(out / "metrics.json", metrics))]
    for name, fig in figs.items():
        if not name.startswith("_"):
            files.append(str(viz.save_figure(fig, out / f"{name}.png")))
    return {"metrics": metrics, "files": files}
