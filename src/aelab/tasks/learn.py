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

from aelab.data.augment import PRESETS
from aelab.data.dataset import ImageDataset, check_classes
from aelab.data.splits import Splits
from aelab.tasks.modeling import model_shape, new_model, record_run
from aelab.tasks.options import with_overrides
from aelab.tasks.outputs import check_output_folder
from aelab.tasks.results import Record
from aelab.tasks.source import DataArg, describe, load_images, stream_images, subsample
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


def _check_common(augment: str, model: str, val_fraction: float) -> None:
    if augment not in PRESETS:
        raise ValueError(f"augment {augment!r}: choose one of {', '.join(PRESETS)}")
    if not model:
        raise ValueError("model: give a registered model name or auto")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


@dataclass
class PretrainOptions(PretrainConfig):
    """Settings of :func:`run_pretrain`: :class:`~aelab.training.PretrainConfig` plus the below.

    Parameters
    ----------
    model : str
        A registered model, or ``"auto"`` for the ``convae`` member that suits the images.
    model_overrides : dict, optional
        Changes to the model's config, e.g. ``{"latent_dim": 64, "image_size": 64}``.
    augment : {"none", "weak", "standard"}
        Augmentation of the inputs (the model reconstructs the augmented image).
    val_fraction : float
        Share of the images held out to monitor the reconstruction loss.
    max_images : int
        Train on at most this many images, a seeded sample (0: all).
    """

    model: str = "auto"
    model_overrides: dict[str, Any] | None = None
    augment: str = "none"
    val_fraction: float = 0.05
    max_images: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self.augment, self.model, self.val_fraction)
        if self.max_images < 0:
            raise ValueError(f"max_images must be >= 0 (0: all), got {self.max_images}")


@dataclass
class FinetuneOptions(FinetuneConfig):
    """Settings of :func:`run_finetune`: :class:`~aelab.training.FinetuneConfig` plus the below.

    Build them from a named recipe with :func:`finetune_options`.

    Parameters
    ----------
    model : str
        The model when starting from scratch (a registered name or ``"auto"``).
    augment : {"none", "weak", "standard"}
        Augmentation of the labelled images (FixMatch: its weak view).
    labels_per_class : int
        Labelled images per class (0: every image not in validation).
    val_per_class : int
        Validation images per class (0: ``val_fraction`` of each class).
    val_fraction : float
        Share of each class held out for validation when ``val_per_class`` is 0.
    """

    model: str = "auto"
    augment: str = "standard"
    labels_per_class: int = 0
    val_per_class: int = 0
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self.augment, self.model, self.val_fraction)
        for name in ("labels_per_class", "val_per_class"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: all), got {getattr(self, name)}")


def finetune_options(recipe: str = "default", **overrides: Any) -> FinetuneOptions:
    """The settings of a named recipe (:data:`aelab.training.FINETUNE_RECIPES`), with overrides.

    ``"default"`` is FixMatch on the unlabeled images; ``"plain"`` supervised
    fine-tuning only. Overrides left at ``None`` keep the recipe's value.
    """
    if recipe not in FINETUNE_RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; choose one of {', '.join(FINETUNE_RECIPES)}")
    base = with_overrides(FinetuneOptions(), FINETUNE_RECIPES[recipe])
    return with_overrides(base, overrides)


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


def _pretrain_parts(data: DataArg, opts: PretrainOptions, stream: bool) -> tuple[Any, ...]:
    """The model, its name, and the training and held-out images (in memory or streamed)."""
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

    ds = subsample(load_images(data), opts.max_images, opts.seed)
    net, name = new_model(ds.image_shape, opts.model, overrides=opts.model_overrides)
    ds = load_images(ds, shape=model_shape(net))
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

    Returns
    -------
    PretrainResult
    """
    from aelab.runtime import seed_everything
    from aelab.training import pretrain

    opts = with_overrides(config or PretrainOptions(), overrides)
    run_dir = _run_dir(out, "pretrain")
    seed_everything(opts.seed)
    net, name, train, val = _pretrain_parts(data, opts, stream)
    result = pretrain(
        net, train, val=val, config=opts, out_dir=run_dir, augment=_augment(opts.augment),
        resume=resume, overwrite=overwrite, model_name=name, num_workers=num_workers,
    )  # fmt: skip
    speed = _speed(result)
    record_run(run_dir, "pretrain", data, {"settings": opts, "speed": speed})
    return PretrainResult(
        run_dir=run_dir, model=name, history=tuple(result.history), n_train=len(train),
        n_val=0 if val is None else len(val), speed=speed,
    )  # fmt: skip


def _finetune_parts(
    data: DataArg | Splits, opts: FinetuneOptions, init: str | os.PathLike[str] | None
) -> tuple[Any, str, Splits]:
    """The model (fresh or from ``init``), its name, and the split images at its shape."""
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
        return net, name, _conform_splits(given, shape)
    parts = split_dataset(
        load_images(ds, shape=shape), labels_per_class=opts.labels_per_class or None,
        val_per_class=opts.val_per_class or None, val_fraction=opts.val_fraction, seed=opts.seed,
    )  # fmt: skip
    return net, name, parts


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
    **overrides
        Fields of the settings to change.

    Returns
    -------
    FinetuneResult
    """
    from aelab.runtime import seed_everything
    from aelab.training import finetune

    opts = with_overrides(config or finetune_options(recipe), overrides)
    run_dir = _run_dir(out, name)
    check_output_folder(run_dir, (), inputs=[init], option="--out/--name")
    seed_everything(opts.seed)
    net, model_name, parts = _finetune_parts(data, opts, init)
    result = finetune(
        net, parts.labeled, val=parts.val,
        unlabeled=parts.unlabeled if opts.uses_unlabeled else None, config=opts,
        out_dir=run_dir, augment=_augment(opts.augment), resume=resume, overwrite=overwrite,
        model_name=model_name,
    )  # fmt: skip
    source = "<splits>" if isinstance(data, Splits) else data
    speed = _speed(result)
    record_run(
        run_dir,
        "finetune",
        source,
        {"recipe": recipe, "init": init, "settings": opts, "speed": speed},
    )
    return FinetuneResult(
        run_dir=run_dir, model=model_name, recipe=recipe,
        augment=opts.augment, history=tuple(result.history), best_epoch=result.best_epoch,
        splits=SplitSizes.of(parts), speed=speed,
    )  # fmt: skip
