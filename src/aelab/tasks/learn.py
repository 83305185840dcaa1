"""The learning tasks: pre-train an autoencoder, fine-tune a classifier on few labels.

Each task takes its images (a :data:`~aelab.tasks.source.DataArg`, or for
fine-tuning an already split :class:`~aelab.data.Splits`), an output folder,
and its settings as one config dataclass or as named overrides of it; it
writes a run folder and returns a frozen result record.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aelab.data.dataset import ImageDataset, check_classes
from aelab.data.splits import Splits
from aelab.tasks.modeling import check_model_overrides, model_shape, new_model, record_run
from aelab.tasks.options import with_overrides
from aelab.tasks.outputs import check_name, output_folder
from aelab.tasks.results import Record
from aelab.tasks.source import (
    DataArg,
    describe,
    input_path,
    load_images,
    stream_images,
    subsample,
    with_unlabeled,
)
from aelab.training.configs import FINETUNE_RECIPES, FinetuneConfig, PretrainConfig

__all__ = [
    "FinetuneOptions",
    "FinetuneResult",
    "PretrainOptions",
    "PretrainResult",
    "SplitSizes",
    "finetune_options",
    "run_finetune",
    "run_pretrain",
]


#: Deprecated aliases: a task's settings are one class each, the training configs
#: (:class:`~aelab.training.PretrainConfig`, :class:`~aelab.training.FinetuneConfig`).
PretrainOptions = PretrainConfig
FinetuneOptions = FinetuneConfig


def finetune_options(recipe: str = "default", **overrides: Any) -> FinetuneConfig:
    """``FinetuneConfig.recipe(recipe)`` with ``overrides`` checked and converted.

    Unlike the classmethod, values may be text (the command line's, the
    study file's) converted to each field's type (:func:`with_overrides`).
    Overrides left at ``None`` keep the recipe's value.
    """
    if recipe not in FINETUNE_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(FINETUNE_RECIPES)}")
    return with_overrides(FinetuneConfig.recipe(recipe), overrides)


@dataclass(frozen=True)
class PretrainResult(Record):
    """What :func:`run_pretrain` produced.

    Attributes
    ----------
    run_dir : Path
        The checkpoint folder (``OUT/pretrain``).
    model : str
        Registry name of the model.
    history : tuple of dict
        One row per epoch (``epoch``, ``lr``, ``train_loss``, ``val_loss``, ``time_s``...).
    n_train, n_val : int
        Images trained on and held out.
    speed : str
        The precision and memory format the run used, and why (``amp="auto"``'s choice).
    """

    run_dir: Path
    model: str
    history: tuple[dict[str, float], ...]
    n_train: int
    n_val: int
    speed: str = ""

    @property
    def train_loss(self) -> float:
        """Reconstruction loss of the last epoch."""
        return float(self.history[-1]["train_loss"]) if self.history else float("nan")

    @property
    def val_loss(self) -> float | None:
        """Held-out reconstruction loss of the last epoch (``None`` without a held-out set)."""
        v = self.history[-1].get("val_loss") if self.history else None
        return None if v is None else float(v)


@dataclass(frozen=True)
class SplitSizes(Record):
    """Images in each part of a fine-tuning split."""

    labeled: int
    unlabeled: int
    val: int

    @classmethod
    def of(cls, splits: Splits) -> SplitSizes:
        return cls(**splits.summary())


@dataclass(frozen=True)
class FinetuneResult(Record):
    """What :func:`run_finetune` produced.

    Attributes
    ----------
    run_dir : Path
        The checkpoint folder (``OUT/NAME``).
    model : str
    recipe : str
        The named recipe the settings started from.
    augment : str
        Augmentation preset of the labelled images.
    history : tuple of dict
        One row per epoch.
    best_epoch : int or None
        The epoch whose weights the checkpoint keeps (by validation accuracy).
    splits : SplitSizes
    speed : str
        The precision and memory format the run used, and why.
    """

    run_dir: Path
    model: str
    recipe: str
    augment: str
    history: tuple[dict[str, float], ...]
    best_epoch: int | None
    splits: SplitSizes
    speed: str = ""

    def _last(self, key: str) -> float | None:
        v = self.history[-1].get(key) if self.history else None
        return None if v is None else float(v)

    @property
    def best_val_acc(self) -> float | None:
        """Best validation accuracy over the epochs (``None`` without validation)."""
        accs = [r["val_acc"] for r in self.history if r.get("val_acc") is not None]
        return max(accs) if accs else None

    @property
    def final_train_acc(self) -> float | None:
        return self._last("train_acc")

    @property
    def final_val_acc(self) -> float | None:
        return self._last("val_acc")


def _run_dir(out: str | os.PathLike[str], name: str) -> Path:
    """``out/name``, refused when it (or ``out``) is a file and not a folder."""
    run_dir = Path(out) / name
    for p in (Path(out), run_dir):
        if p.exists() and not p.is_dir():
            raise ValueError(f"{p} is a file, not a run folder; remove it or choose another --out")
    return run_dir


def _speed(result: Any) -> str:
    """What ``amp``/``channels_last`` "auto" chose for a run, in one line."""
    return result.speed.describe() if getattr(result, "speed", None) is not None else ""


def _augment(preset: str) -> Any:
    from aelab.data import make_augment

    return None if preset == "none" else make_augment(preset)


def _streamed_digests(data: DataArg, train: Any, val: Any) -> dict[str, str | None] | None:
    """For rows of a memory-mapped file: its path, size and time, not its bytes (maybe > memory).

    ``None`` for anything else (a folder's digest is already its files' stamps).
    """
    from aelab.data import ImageDataset
    from aelab.fingerprint import array_digest, digest, files_digest

    path = input_path(data)
    if path is None or not isinstance(train.source, ImageDataset):
        return None
    stamp = files_digest([path, *([data.labels] if getattr(data, "labels", None) else [])])
    return {name: None if rows is None else digest([stamp, array_digest(rows.index)])
            for name, rows in (("training images", train), ("validation images", val))}  # fmt: skip


def _pretrain_parts(
    data: DataArg, opts: PretrainOptions, stream: bool, unlabeled: DataArg | None = None
) -> tuple[Any, ...]:
    """The model, its name, and the training and held-out images (in memory or streamed).

    ``unlabeled`` images join ``data``'s (at the model's shape) before the
    ``max_images`` sample and the held-out split.
    """
    from aelab.data import ImageRows, split_indices

    if stream:
        probe = stream_images(data)
        net, name = new_model(tuple(probe.image_shape), opts.model, overrides=opts.model_overrides)
        shape = model_shape(net)
        if tuple(probe.image_shape) != shape:
            probe = stream_images(data, shape=shape)  # a folder is decoded at the model's size
        rows = subsample(ImageRows(probe), opts.max_images, opts.seed)
        _, rest, val_idx = split_indices(rows, val_fraction=opts.val_fraction, seed=opts.seed)
        rows.labels = None  # pre-training never sees labels
        _check_left_to_train(data, len(rows), int(val_idx.size), opts)
        return net, name, rows.subset(rest), rows.subset(val_idx) if val_idx.size else None
    from aelab.data import split_dataset

    ds = load_images(data)
    if unlabeled is None:  # sampled before conforming: fewer images to resize
        ds = subsample(ds, opts.max_images, opts.seed)
    net, name = new_model(ds.image_shape, opts.model, overrides=opts.model_overrides)
    ds = load_images(ds, shape=model_shape(net))
    if unlabeled is not None:
        ds = subsample(with_unlabeled(ds, unlabeled), opts.max_images, opts.seed)
    parts = split_dataset(ds, val_fraction=opts.val_fraction, seed=opts.seed)
    _check_left_to_train(data, len(ds), 0 if parts.val is None else len(parts.val), opts)
    return net, name, parts.unlabeled, parts.val


def _check_left_to_train(data: DataArg, n: int, n_val: int, opts: PretrainOptions) -> None:
    """Refuse a split that leaves fewer than two images to train on (batch norm needs two)."""
    if n - n_val < 2:
        limit = f" (max_images {opts.max_images})" if opts.max_images else ""
        raise ValueError(
            f"{describe(data)}: {n} image{'s' if n != 1 else ''}{limit}, {n_val} held out for validation "
            f"(val_fraction {opts.val_fraction:g}), leaving {n - n_val} to train on; pre-training "
            "needs at least 2: lower val_fraction or use more images"
        )


def run_pretrain(
    data: DataArg,
    out: str | os.PathLike[str],
    config: PretrainOptions | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    stream: bool = False,
    num_workers: int = 0,
    unlabeled: DataArg | None = None,
    **overrides: Any,
) -> PretrainResult:
    """Pre-train an autoencoder on ``data`` (labels ignored) into ``out/pretrain``.

    Parameters
    ----------
    data : DataArg
        The images.
    out : path
        Run folder; the checkpoint goes to ``out/pretrain``.
    config : PretrainOptions, optional
        The settings (default ``PretrainOptions()``); ``overrides`` change fields of it.
    resume, overwrite : bool
        Continue an interrupted run in ``out/pretrain``, or replace one.
    stream : bool
        Read the images batch by batch (a folder decoded on access, a uint8
        ``.npy`` memory-mapped), so memory does not grow with the data.
    num_workers : int
        Processes that read batches ahead.
    unlabeled : DataArg, optional
        More images to pre-train on beside ``data``'s (a flat folder or an
        ``.npy``/``.npz`` array; labels ignored), brought to the model's shape.

    Returns
    -------
    PretrainResult
    """
    from aelab.runtime import seed_everything
    from aelab.training import pretrain

    opts = with_overrides(config or PretrainOptions(), overrides)
    opts.model_overrides = check_model_overrides(opts.model_overrides)
    if stream and unlabeled is not None:
        raise ValueError("--unlabeled images are read into memory; drop --stream or --unlabeled")
    run_dir = _run_dir(out, "pretrain")
    with output_folder(run_dir, "pretrain", inputs=[data, unlabeled], overwrite=overwrite,
                       option="--out"):  # fmt: skip
        seed_everything(opts.seed)
        net, name, train, val = _pretrain_parts(data, opts, stream, unlabeled)
        result = pretrain(
            net, train, val=val, config=opts, out_dir=run_dir, augment=_augment(opts.augment),
            resume=resume, overwrite=overwrite, model_name=name, num_workers=num_workers,
            data_digests=_streamed_digests(data, train, val) if stream else None,
        )  # fmt: skip
        speed = _speed(result)
        extra = {"unlabeled": describe(unlabeled)} if unlabeled is not None else {}
        record_run(run_dir, "pretrain", data, {"settings": opts, "speed": speed, **extra})
    return PretrainResult(
        run_dir=run_dir, model=name, history=tuple(result.history), n_train=len(train),
        n_val=0 if val is None else len(val), speed=speed,
    )  # fmt: skip


def _finetune_parts(
    data: DataArg | Splits,
    opts: FinetuneOptions,
    init: str | os.PathLike[str] | None,
    unlabeled: DataArg | None = None,
) -> tuple[Any, str, Splits]:
    """The model (fresh or from ``init``), its name, and the split images at its shape.

    ``unlabeled`` images join the unlabeled part (the labelled set's unused images).
    """
    from aelab.data import split_dataset
    from aelab.training import load_model

    given = data if isinstance(data, Splits) else None
    ds = given.labeled if given is not None else load_images(data)
    if ds is None or ds.labels is None:
        raise ValueError(
            "fine-tuning needs labels: give a folder with one subfolder per class, "
            "an .npz with a labels array, or --labels FILE"
        )
    # Before loading a checkpoint or building a model: a head for classes that never occur
    # (or for one class) would train without complaint.
    check_classes(ds.labels, ds.class_names, "labeled" if given is not None else describe(data))
    if init is not None:
        net, meta = load_model(init, device="cpu")
        name = meta["model"]
    else:
        net, name = new_model(ds.image_shape, opts.model, num_classes=ds.num_classes)
    shape = model_shape(net)
    if given is not None:
        if any(v for v in (opts.labels_per_class, opts.val_per_class)):
            raise ValueError(
                "labels_per_class and val_per_class split the data; these are split already"
            )
        return net, name, _more_unlabeled(_conform_splits(given, shape), unlabeled)
    parts = split_dataset(
        load_images(ds, shape=shape), labels_per_class=opts.labels_per_class or None,
        val_per_class=opts.val_per_class or None, val_fraction=opts.val_fraction, seed=opts.seed,
    )  # fmt: skip
    return net, name, _more_unlabeled(parts, unlabeled)


def _more_unlabeled(parts: Splits, unlabeled: DataArg | None) -> Splits:
    """``parts`` with ``unlabeled``'s images added to its unlabeled part."""
    if unlabeled is None:
        return parts
    pool = parts.unlabeled if parts.unlabeled is not None else parts.labeled.subset([])
    return dataclasses.replace(parts, unlabeled=with_unlabeled(pool, unlabeled))


def _conform_splits(s: Splits, shape: tuple[int, int, int]) -> Splits:
    def fit(ds: ImageDataset | None) -> ImageDataset | None:
        return None if ds is None else load_images(ds, shape=shape)

    return dataclasses.replace(
        s, labeled=fit(s.labeled), unlabeled=fit(s.unlabeled), val=fit(s.val)
    )


def run_finetune(
    data: DataArg | Splits,
    out: str | os.PathLike[str],
    config: FinetuneOptions | None = None,
    *,
    init: str | os.PathLike[str] | None = None,
    name: str = "finetune",
    recipe: str = "default",
    resume: bool = False,
    overwrite: bool = False,
    unlabeled: DataArg | None = None,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune a classifier on labelled ``data`` into ``out/name``, from ``init`` or from scratch.

    Parameters
    ----------
    data : DataArg or Splits
        Labelled images, split here (seeded: validation first, then
        ``labels_per_class``), or parts already split (the study splits once).
    out : path
        Run folder; the checkpoint goes to ``out/name``.
    config : FinetuneOptions, optional
        The settings; default those of ``recipe`` (see :func:`finetune_options`).
    init : path, optional
        A pre-trained run folder to start from.
    name : str
        Subfolder of ``out``.
    recipe : str
        The named recipe of the default settings (ignored with ``config``).
    resume, overwrite : bool
        Continue an interrupted run in ``out/name``, or replace one.
    unlabeled : DataArg, optional
        More images without labels (a flat folder or an ``.npy``/``.npz``
        array; labels ignored) for the unlabeled pool, beside the images of
        ``data`` not labelled; needs a recipe that learns from them (``default``).
    **overrides
        Fields of the settings to change.

    Returns
    -------
    FinetuneResult
    """
    from aelab.runtime import seed_everything
    from aelab.training import finetune
    from aelab.training.runfolder import checkpoint_digest

    opts = with_overrides(config or finetune_options(recipe), overrides)
    if unlabeled is not None and not opts.uses_unlabeled:
        raise ValueError(
            "--unlabeled: these settings learn from labels only (semi none, recon_weight 0); "
            "use --recipe default (FixMatch) or drop --unlabeled"
        )
    run_dir = _run_dir(out, check_name(name))
    with output_folder(run_dir, "finetune", inputs=[init, data, unlabeled], overwrite=overwrite,
                       option="--out/--name"):  # fmt: skip
        seed_everything(opts.seed)
        net, model_name, parts = _finetune_parts(data, opts, init, unlabeled)
        result = finetune(
            net, parts.labeled, val=parts.val,
            unlabeled=parts.unlabeled if opts.uses_unlabeled else None, config=opts,
            out_dir=run_dir, augment=_augment(opts.augment), resume=resume, overwrite=overwrite,
            model_name=model_name,
            inputs={"--init checkpoint": checkpoint_digest(init)} if init else None,
        )  # fmt: skip
        source = "<splits>" if isinstance(data, Splits) else data
        speed = _speed(result)
        more = {"unlabeled": describe(unlabeled)} if unlabeled is not None else {}
        record_run(run_dir, "finetune", source,
                   {"recipe": recipe, "init": init, "settings": opts, "speed": speed, **more})  # fmt: skip
    return FinetuneResult(
        run_dir=run_dir, model=model_name, recipe=recipe,
        augment=opts.augment, history=tuple(result.history), best_epoch=result.best_epoch,
        splits=SplitSizes.of(parts), speed=speed,
    )  # fmt: skip
