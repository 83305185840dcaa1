"""High-level training and inference for the convolutional autoencoder family.

These are the functions the CLI calls: :func:`pretrain` (reconstruction on
unlabeled images), :func:`finetune` (classification on few labels, optionally
keeping a reconstruction term), and batched inference: :func:`predict`,
:func:`evaluate`, :func:`encode` (:func:`iter_encode` batch by batch),
:func:`reconstruct`.

Defaults are chosen for ``convae_fmnist`` on Fashion-MNIST: AdamW at 1e-3
with one warm-up epoch and cosine decay, batch 128, gradient clipping at 1.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from aelab.runtime import resolve_device
from aelab.data.dataset import ImageDataset
from aelab.data.streaming import ImageRows
from aelab.training import distributed as dist_utils
from aelab.training.loop import TrainConfig, Trainer, TrainResult
from aelab.training.semisup import SEMI_METHODS, fixmatch_step, make_strong_augment
from aelab.training.steps import RECON_LOSSES, Augment, classification_step, reconstruction_step

__all__ = [
    "FINETUNE_RECIPES",
    "FinetuneConfig",
    "PretrainConfig",
    "encode",
    "evaluate",
    "finetune",
    "finetune_recipe",
    "iter_encode",
    "predict",
    "pretrain",
    "reconstruct",
]

# Whole uint8 datasets up to this size are copied to the GPU once, so a batch
# is an index on the device rather than a host-to-device copy per step.
_DEVICE_RESIDENT_BYTES = 2 << 30


@dataclass
class PretrainConfig(TrainConfig):
    """Settings of :func:`pretrain`: those of :class:`TrainConfig` plus the below.

    Parameters
    ----------
    batch_size : int
        Images per step.
    loss : {"mse", "l1", "bce"}
        Reconstruction loss.
    mask_ratio : float in [0, 1)
        Masked-patch pre-training: hide this share of ``mask_patch``-pixel
        squares of each training image and reconstruct the whole image
        (0: plain reconstruction).
    mask_patch : int
        Side of the hidden squares in pixels.
    """

    epochs: int = 30
    batch_size: int = 128
    loss: str = "mse"
    mask_ratio: float = 0.0
    mask_patch: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 (batch norm needs two images), got {self.batch_size}"
            )
        if self.loss not in RECON_LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; use one of {', '.join(RECON_LOSSES)}")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.mask_patch < 1:
            raise ValueError(f"mask_patch must be >= 1 pixel, got {self.mask_patch}")


@dataclass
class FinetuneConfig(TrainConfig):
    """Settings of :func:`finetune`: those of :class:`TrainConfig` plus the below.

    ``monitor`` defaults to ``"val_acc"`` when validation data is given.

    Parameters
    ----------
    batch_size : int
        Labelled images per step (and as many unlabeled ones when the
        reconstruction term uses unlabeled data).
    recon_weight : float
        Weight of the reconstruction loss added to the cross-entropy. 0 (the
        default) is plain fine-tuning and skips the decoder; a small value
        such as 0.1 keeps the encoder faithful to the images, and is the only
        way ``unlabeled`` data is used for now.
    recon_loss : {"mse", "l1", "bce"}
        Which reconstruction loss.
    freeze_encoder_epochs : int
        Train only the head (encoder frozen, its batch-norm statistics fixed)
        for this many first epochs, so a random head does not wreck the
        pre-trained features.
    encoder_lr_mult : float
        Learning rate of the encoder relative to ``lr`` (the head gets ``lr``).
    label_smoothing : float
        Label smoothing of the training cross-entropy, in [0, 1).
    semi : {"none", "fixmatch"}
        How the ``unlabeled`` images take part: ``"none"`` (only through the
        reconstruction term, if any) or ``"fixmatch"`` (confident predictions
        on weakly augmented unlabeled images become the targets of strongly
        augmented ones, see :func:`aelab.training.semisup.fixmatch_step`).
    unlabeled_weight : float
        Weight of the FixMatch term.
    threshold : float
        Confidence (maximum softmax probability) above which FixMatch keeps
        a pseudo-label, in (0, 1].
    unlabeled_ratio : int
        Unlabeled images per labelled image in a step (FixMatch's mu).
    distribution_alignment : bool
        Rebalance FixMatch's predictions on each unlabeled batch towards
        equal class shares before thresholding (ReMixMatch's distribution
        alignment); for data whose classes are about balanced.

    Notes
    -----
    With ``semi`` other than ``"none"``, an epoch is one pass over the
    unlabeled images (``len(unlabeled) // (batch_size * unlabeled_ratio)``
    steps) while the labelled images repeat; otherwise one pass over the
    labelled images.
    """

    epochs: int = 30
    batch_size: int = 64
    recon_weight: float = 0.0
    recon_loss: str = "mse"
    freeze_encoder_epochs: int = 0
    encoder_lr_mult: float = 0.1
    label_smoothing: float = 0.1
    semi: str = "none"
    unlabeled_weight: float = 1.0
    threshold: float = 0.95
    unlabeled_ratio: int = 3
    distribution_alignment: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batch_size < 2:
            raise ValueError(
                f"batch_size must be >= 2 (batch norm needs two images), got {self.batch_size}"
            )
        if self.recon_weight < 0:
            raise ValueError(f"recon_weight must be >= 0, got {self.recon_weight}")
        if self.recon_loss not in RECON_LOSSES:
            raise ValueError(
                f"unknown recon_loss {self.recon_loss!r}; use one of {', '.join(RECON_LOSSES)}"
            )
        if self.freeze_encoder_epochs < 0:
            raise ValueError(
                f"freeze_encoder_epochs must be >= 0, got {self.freeze_encoder_epochs}"
            )
        if not self.encoder_lr_mult >= 0:
            raise ValueError(f"encoder_lr_mult must be >= 0, got {self.encoder_lr_mult}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.semi not in SEMI_METHODS:
            raise ValueError(f"unknown semi {self.semi!r}; use one of {', '.join(SEMI_METHODS)}")
        if not self.unlabeled_weight >= 0:
            raise ValueError(f"unlabeled_weight must be >= 0, got {self.unlabeled_weight}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.unlabeled_ratio < 1:
            raise ValueError(f"unlabeled_ratio must be >= 1, got {self.unlabeled_ratio}")

    @property
    def uses_unlabeled(self) -> bool:
        """Whether this recipe learns from unlabeled images (FixMatch or a reconstruction term)."""
        return self.semi != "none" or self.recon_weight > 0


# ----------------------------------------------------------------------------- named recipes

#: Fine-tuning recipes by name: each is a set of :class:`FinetuneConfig` fields
#: (plus ``augment``, the weak augmentation preset). ``benchmarks/fewlabel.py``
#: measures them; ``"default"`` is what ``aelab finetune`` uses.
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    # Supervised fine-tuning on the labelled images only (aelab's recipe before FixMatch).
    "plain": {
        "augment": "standard",
        "semi": "none",
        "epochs": 30,
        "lr": 1e-3,
        "encoder_lr_mult": 0.1,
        "label_smoothing": 0.1,
        "recon_weight": 0.0,
    },
    # FixMatch on the unlabeled pool, from the pre-trained encoder. The weak
    # view is FixMatch's (flip + shift); at 100 labels per class a threshold of
    # 0.8 beat 0.95 within this short schedule (84.5 % against 83.8 % on 2,000
    # test images: more pseudo-labels per step). No label smoothing: it would
    # cap the confidence below the threshold.
    "fixmatch": {
        "augment": "weak",
        "semi": "fixmatch",
        # Epochs are passes over the unlabeled images here (see FinetuneConfig).
        "epochs": 3,
        "warmup_epochs": 0.2,
        "lr": 1e-3,
        "encoder_lr_mult": 1.0,
        "label_smoothing": 0.0,
        "recon_weight": 0.0,
        "threshold": 0.8,
        "unlabeled_weight": 1.0,
        "unlabeled_ratio": 3,
    },
}
FINETUNE_RECIPES["default"] = dict(FINETUNE_RECIPES["fixmatch"])


def finetune_recipe(name: str = "default", **overrides: Any) -> tuple[FinetuneConfig, str]:
    """The :class:`FinetuneConfig` and augmentation preset of a named recipe.

    Parameters
    ----------
    name : str
        A key of :data:`FINETUNE_RECIPES` (``"default"``, ``"plain"``, ``"fixmatch"``).
    **overrides
        :class:`FinetuneConfig` fields (or ``augment``) replacing the
        recipe's; ``None`` values are ignored, so unset CLI options fall
        through to the recipe.

    Returns
    -------
    config : FinetuneConfig
    augment : str
        The augmentation preset name (``"standard"``, ``"weak"`` or ``"none"``).
    """
    if name not in FINETUNE_RECIPES:
        raise ValueError(
            f"unknown fine-tuning recipe {name!r}; use one of {', '.join(FINETUNE_RECIPES)}"
        )
    values = {**FINETUNE_RECIPES[name], **{k: v for k, v in overrides.items() if v is not None}}
    augment = values.pop("augment")
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown FinetuneConfig fields: {', '.join(unknown)}")
    return FinetuneConfig(**values), augment


# ----------------------------------------------------------------------------- batches


class _EpochBatches:
    """One epoch of batches: uint8 rows gathered by index, then float in [0, 1] on the device.

    ``order`` holds this process's rows batch after batch (already sharded and
    with a dropped ragged batch left out, see :func:`_batch_factory`).
    Trusts its input.
    """

    def __init__(
        self,
        reader: _Reader,
        labels: torch.Tensor | None,
        order: torch.Tensor,
        batch_size: int,
        device: torch.device,
        unlabeled: tuple[_Reader, torch.Tensor, int, int] | None = None,
        num_workers: int = 0,
        unlabeled_batch_size: int | None = None,
    ) -> None:
        self.reader, self.labels, self.order = reader, labels, order
        self.batch_size, self.device, self.unlabeled = batch_size, device, unlabeled
        self.num_workers = num_workers
        # This process's share of each global unlabeled batch.
        self.unlabeled_batch_size = unlabeled_batch_size or batch_size
        self._len = math.ceil(len(order) / batch_size)

    def __len__(self) -> int:
        return self._len

    def _float(self, u8: torch.Tensor) -> torch.Tensor:
        return u8.to(self.device, non_blocking=True).float().div_(255)

    def _index(self) -> list[torch.Tensor]:
        bs = self.batch_size
        return [self.order[b * bs : (b + 1) * bs] for b in range(self._len)]

    def _images(self) -> Iterator[torch.Tensor]:
        index = self._index()
        if self.num_workers == 0:
            yield from (self.reader(idx) for idx in index)
            return
        from torch.utils.data import DataLoader

        # One task per batch (batch_size=None): a worker reads a whole batch.
        loader = DataLoader(
            self.reader,
            sampler=index,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        yield from loader

    def __iter__(self) -> Iterator[Any]:
        for b, (idx, u8) in enumerate(zip(self._index(), self._images(), strict=True)):
            x = self._float(u8)
            if self.labels is None:
                yield x
                continue
            y = self.labels[idx].to(self.device, non_blocking=True)
            if self.unlabeled is None:
                yield x, y
                continue
            u_reader, u_order, offset, stride = self.unlabeled
            # Unlabeled batches cycle through their own permutation; this
            # process takes its share of the global unlabeled batch.
            ubs = self.unlabeled_batch_size
            pos = b * stride + offset + torch.arange(ubs, device=u_order.device)
            yield x, y, self._float(u_reader(u_order[pos % len(u_order)]))


class _Reader:
    """``reader(idx)``: uint8 images at positions ``idx`` of a dataset or a row view.

    Also a map-style dataset (``reader[idx]``), which is how DataLoader workers call it.
    """

    def __init__(self, images: torch.Tensor | None, rows: ImageRows | None) -> None:
        self.images, self.rows = images, rows

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        if self.images is not None:
            return self.images[idx]
        assert self.rows is not None
        return self.rows.read(idx)

    __getitem__ = __call__


def _place(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":
        if t.numel() * t.element_size() <= _DEVICE_RESIDENT_BYTES:
            return t.to(device)
        return t.pin_memory()
    return t


def _reader(data: ImageDataset | ImageRows, device: torch.device) -> _Reader:
    if isinstance(data, ImageDataset):
        return _Reader(_place(data.images, device), None)
    return _Reader(None, data)


def _batch_factory(
    data: ImageDataset | ImageRows,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    device: torch.device,
    labels: bool,
    unlabeled: ImageDataset | ImageRows | None = None,
    num_workers: int = 0,
    unlabeled_batch_size: int | None = None,
    epoch_over_unlabeled: bool = False,
) -> Callable[[int], _EpochBatches]:
    """``factory(epoch)``: batches of ``data``, reshuffled from ``(seed, epoch)`` when ``shuffle``.

    ``batch_size`` is the global batch. Under torchrun every process draws the
    same permutation and keeps its share of each global batch (training), or
    every ``world_size``-th row (evaluation, ``shuffle=False``).

    ``unlabeled_batch_size`` (default ``batch_size``) is the global unlabeled
    batch, shared between processes the same way. With ``epoch_over_unlabeled``
    an epoch is one pass over ``unlabeled`` and the labelled images repeat, in
    fresh permutations, as often as that takes: how semi-supervised methods
    count epochs, so their length does not shrink with the number of labels.
    """
    reader = _reader(data, device)
    # Index tensors live where the images do (the GPU for device-resident data).
    where = reader.images.device if reader.images is not None else torch.device("cpu")
    ys = None
    if labels and data.labels is not None:
        ys = _place(data.labels, device) if isinstance(data, ImageDataset) else data.labels
    u_reader = _reader(unlabeled, device) if unlabeled is not None else None
    u_where = (
        u_reader.images.device
        if u_reader is not None and u_reader.images is not None
        else torch.device("cpu")
    )
    n = len(data)
    world = dist_utils.info()
    if shuffle:
        per = dist_utils.shard_order(
            torch.arange(n), batch_size, drop_last=True, rank=world.rank,
            world_size=world.world_size,
        )[1]  # fmt: skip
    else:
        per = math.ceil(batch_size / world.world_size)
        mine = dist_utils.shard_rows(n, rank=world.rank, world_size=world.world_size)
    # ``unlabeled_batch_size`` is global too; each process reads its share.
    u_batch = unlabeled_batch_size or batch_size
    if unlabeled is not None and u_batch % world.world_size:
        raise ValueError(
            f"the global unlabeled batch size {u_batch} is not a multiple of the "
            f"{world.world_size} processes; choose a batch size divisible by {world.world_size}"
        )
    u_per = u_batch // world.world_size

    def perm(size: int, epoch: int, stream: int, device: torch.device) -> torch.Tensor:
        # One generator per (seed, epoch, stream): the order of epoch e never
        # depends on what ran before it, which is what makes resume exact.
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7 + stream)
        return torch.randperm(size, generator=g).to(device)

    def repeated_perm(epoch: int, length: int, device: torch.device) -> torch.Tensor:
        # The labelled rows repeat, each pass in a fresh permutation, until
        # ``length`` rows; the same on every rank, sharded like ``perm``.
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7 + 2)
        reps = math.ceil(length / n)
        return torch.cat([torch.randperm(n, generator=g) for _ in range(reps)])[:length].to(device)

    def factory(epoch: int) -> _EpochBatches:
        if shuffle:
            order, _ = dist_utils.shard_order(
                perm(n, epoch, 0, where), batch_size, drop_last=True, rank=world.rank,
                world_size=world.world_size,
            )  # fmt: skip
        else:
            order = mine.to(where)
        extra = None
        if u_reader is not None:
            assert unlabeled is not None
            extra = (
                u_reader,
                perm(len(unlabeled), epoch, 1, u_where),
                world.rank * u_per,
                u_batch,
            )
            if epoch_over_unlabeled:
                steps = max(1, len(unlabeled) // u_batch)
                order, _ = dist_utils.shard_order(
                    repeated_perm(epoch, steps * batch_size, where), batch_size,
                    drop_last=True, rank=world.rank, world_size=world.world_size,
                )  # fmt: skip
        return _EpochBatches(reader, ys, order, per, device, extra, num_workers, u_per)

    return factory


# ----------------------------------------------------------------------------- validation


def _expected_shape(model: nn.Module) -> tuple[int, int, int] | None:
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "in_channels"):
        return None
    return (cfg.in_channels, cfg.image_size, cfg.image_size)


def _check_images(model: nn.Module, shape: tuple[int, ...], what: str) -> None:
    want = _expected_shape(model)
    if want is not None and tuple(shape) != want:
        raise ValueError(
            f"{what} images are {'x'.join(map(str, shape))} but the model expects "
            f"{'x'.join(map(str, want))}; load the data at the model's size and channels "
            "(e.g. image_size/grayscale options of the loader) or build the model for this data"
        )


def _check_dataset(
    model: nn.Module, data: Any, what: str, *, labels: bool = False
) -> ImageDataset | ImageRows:
    if not isinstance(data, ImageDataset | ImageRows):
        raise ValueError(
            f"{what} must be an aelab.data.ImageDataset or ImageRows, got {type(data).__name__}"
        )
    if len(data) == 0:
        raise ValueError(f"{what} is empty")
    _check_images(model, data.image_shape, what)
    if labels and data.labels is None:
        raise ValueError(f"{what} has no labels; fine-tuning and evaluation need labelled images")
    return data


def _model_name(model: nn.Module, model_name: str | None) -> str:
    if model_name:
        return model_name
    from aelab.models import ConvAutoencoder

    if isinstance(model, ConvAutoencoder):
        # model.json stores the full config, so the base variant rebuilds any family member.
        return "convae"
    raise ValueError("give model_name, the registry name that rebuilds this model")


def _model_meta(model: nn.Module, data: ImageDataset | ImageRows, task: str) -> dict[str, Any]:
    return {
        "task": task,
        "image_shape": list(data.image_shape),
        "class_names": data.class_names,
    }


def _data_summary(**sets: ImageDataset | ImageRows | None) -> dict[str, Any]:
    return {name: (None if ds is None else len(ds)) for name, ds in sets.items()}


# ----------------------------------------------------------------------------- training


def _check_num_workers(num_workers: int) -> None:
    if isinstance(num_workers, bool) or int(num_workers) != num_workers or num_workers < 0:
        raise ValueError(f"num_workers must be an integer >= 0, got {num_workers!r}")


def pretrain(
    model: nn.Module,
    data: ImageDataset | ImageRows,
    *,
    val: ImageDataset | ImageRows | None = None,
    config: PretrainConfig | None = None,
    out_dir: str | Path | None = None,
    augment: Augment | None = None,
    resume: bool = False,
    overwrite: bool = False,
    model_name: str | None = None,
    num_workers: int = 0,
) -> TrainResult:
    """Pre-train an autoencoder to reconstruct images (labels are ignored).

    Parameters
    ----------
    model : torch.nn.Module
        An autoencoder with ``encode`` and ``decode`` (e.g. from
        ``aelab.models.create_model``); trained in place.
    data : ImageDataset or ImageRows
        Training images, shape (n_samples, C, H, W) matching the model. An
        :class:`~aelab.data.ImageRows` view (of a memory map or an
        :class:`~aelab.data.ImageFolderStream`) is read batch by batch, so
        memory does not grow with the dataset.
    val : ImageDataset or ImageRows, optional
        Validation images; then ``val_loss`` picks the best epoch.
    config : PretrainConfig, optional
        Defaults to ``PretrainConfig()``.
    out_dir : str or Path, optional
        Run folder for checkpoints and ``metrics.csv``; ``None`` writes nothing.
    augment : callable, optional
        Batch augmentation (float (B, C, H, W) in [0, 1] -> same) for training;
        the model reconstructs the augmented image.
    resume : bool
        Continue the run in ``out_dir``.
    overwrite : bool
        Replace a finished or interrupted run in ``out_dir``.
    model_name : str, optional
        Registry name for ``model.json``; inferred for ``ConvAutoencoder``.
    num_workers : int
        Worker processes that read training batches (0: in this process).

    Returns
    -------
    TrainResult

    Notes
    -----
    Under ``torchrun`` every process runs this same call: ``config.batch_size``
    is the global batch (a multiple of the number of processes), each process
    trains on its share of it, and rank 0 writes ``out_dir``.
    """
    config = config or PretrainConfig()
    if not isinstance(config, PretrainConfig):
        raise ValueError(f"config must be a PretrainConfig, got {type(config).__name__}")
    _check_dataset(model, data, "data")
    if val is not None:
        _check_dataset(model, val, "val")
    if len(data) < 2:
        raise ValueError("pre-training needs at least 2 images (batch norm)")
    _check_num_workers(num_workers)
    dist_utils.init_from_env(config.device)
    device = resolve_device(config.device)
    name = _model_name(model, model_name) if out_dir is not None else model_name
    train_batches = _batch_factory(
        data,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        device=device,
        labels=False,
        num_workers=num_workers,
    )
    val_batches = None
    if val is not None:
        val_batches = _batch_factory(
            val,
            batch_size=config.batch_size,
            shuffle=False,
            seed=config.seed,
            device=device,
            labels=False,
            num_workers=num_workers,
        )
    trainer = Trainer(
        model,
        reconstruction_step(
            loss=config.loss,
            augment=augment,
            mask_ratio=config.mask_ratio,
            mask_patch=config.mask_patch,
        ),
        train_batches,
        config=config,
        val_batches=val_batches,
        run_dir=out_dir,
        model_name=name,
        model_meta=_model_meta(model, data, "pretrain"),
        run_config={
            "task": "pretrain",
            "data": _data_summary(train=data, val=val),
            "augment": augment is not None,
        },
    )
    return trainer.fit(resume=resume, overwrite=overwrite)


def _freeze_encoder(
    encoder: nn.Module, epochs: int
) -> tuple[Callable[[Trainer], None], Callable[[Trainer], None]]:
    """Callbacks that freeze ``encoder`` (no gradients, fixed BN statistics) for the first epochs."""

    def on_epoch_start(trainer: Trainer) -> None:
        frozen = trainer.epoch < epochs
        for p in encoder.parameters():
            p.requires_grad_(not frozen)
        if frozen:
            encoder.eval()

    def on_fit_end(trainer: Trainer) -> None:
        for p in encoder.parameters():
            p.requires_grad_(True)

    return on_epoch_start, on_fit_end


def finetune(
    model: nn.Module,
    labeled: ImageDataset | ImageRows,
    *,
    val: ImageDataset | ImageRows | None = None,
    unlabeled: ImageDataset | ImageRows | None = None,
    config: FinetuneConfig | None = None,
    out_dir: str | Path | None = None,
    augment: Augment | None = None,
    resume: bool = False,
    overwrite: bool = False,
    model_name: str | None = None,
    num_workers: int = 0,
) -> TrainResult:
    """Fine-tune an autoencoder's encoder and classifier head on labelled images.

    The head is replaced by a fresh one when the model's number of classes
    differs from the data's. The encoder learns at ``lr * encoder_lr_mult``
    and can be frozen for the first ``freeze_encoder_epochs``.

    Parameters
    ----------
    model : torch.nn.Module
        An autoencoder with ``encode``, ``decode``, ``classify`` and an
        ``encoder`` submodule (``ConvAutoencoder``), usually pre-trained;
        trained in place.
    labeled : ImageDataset
        Labelled training images (n_samples, C, H, W) with ``labels``.
    val : ImageDataset, optional
        Labelled validation images; then ``val_acc`` picks the best epoch.
    unlabeled : ImageDataset, optional
        Images without labels (of shape (n_unlabeled, C, H, W)); FixMatch
        (``config.semi="fixmatch"``, then required) and the reconstruction
        term (``config.recon_weight > 0``) learn from them; ignored otherwise.
    config : FinetuneConfig, optional
        Defaults to ``FinetuneConfig()``.
    out_dir, augment, resume, overwrite, model_name, num_workers
        As in :func:`pretrain` (also for running under ``torchrun``).

    Returns
    -------
    TrainResult
    """
    config = config or FinetuneConfig()
    if not isinstance(config, FinetuneConfig):
        raise ValueError(f"config must be a FinetuneConfig, got {type(config).__name__}")
    _check_dataset(model, labeled, "labeled", labels=True)
    if val is not None:
        _check_dataset(model, val, "val", labels=True)
    if unlabeled is not None:
        _check_dataset(model, unlabeled, "unlabeled")
        if not config.uses_unlabeled:
            warnings.warn(
                "unlabeled images are used by semi='fixmatch' or the reconstruction term; "
                "set one of them to use them (ignored now)",
                stacklevel=2,
            )
            unlabeled = None
    elif config.semi != "none":
        raise ValueError(
            f"semi={config.semi!r} learns from unlabeled images; pass unlabeled=... "
            "(e.g. the unlabeled part of split_dataset) or set semi='none'"
        )
    if len(labeled) < 2:
        raise ValueError("fine-tuning needs at least 2 labelled images (batch norm)")
    k = labeled.num_classes
    assert k is not None
    if val is not None and val.labels is not None and int(val.labels.max()) >= k:
        raise ValueError(
            f"val has label {int(val.labels.max())} but labeled has only {k} classes; "
            "give both sets the same class names"
        )
    if getattr(getattr(model, "config", None), "num_classes", k) != k:
        model.reset_classifier(k)  # type: ignore[operator]
    if config.monitor is None and val is not None:
        config = dataclasses.replace(config, monitor="val_acc")
    _check_num_workers(num_workers)
    dist_utils.init_from_env(config.device)
    device = resolve_device(config.device)
    name = _model_name(model, model_name) if out_dir is not None else model_name
    train_batches = _batch_factory(
        labeled,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed,
        device=device,
        labels=True,
        unlabeled=unlabeled,
        unlabeled_batch_size=config.batch_size
        * (config.unlabeled_ratio if config.semi != "none" else 1),
        epoch_over_unlabeled=config.semi != "none",
        num_workers=num_workers,
    )
    val_batches = None
    if val is not None:
        val_batches = _batch_factory(
            val,
            batch_size=max(config.batch_size, 256),
            shuffle=False,
            seed=config.seed,
            device=device,
            labels=True,
        )
    if config.semi == "fixmatch":
        step = fixmatch_step(
            weak=augment,
            strong=make_strong_augment(),
            threshold=config.threshold,
            unlabeled_weight=config.unlabeled_weight,
            label_smoothing=config.label_smoothing,
            recon_weight=config.recon_weight,
            recon_loss=config.recon_loss,
            align=config.distribution_alignment,
        )
    else:
        step = classification_step(
            augment=augment,
            label_smoothing=config.label_smoothing,
            recon_weight=config.recon_weight,
            recon_loss=config.recon_loss,
        )
    lr_mult = {"encoder.": config.encoder_lr_mult} if config.encoder_lr_mult != 1 else None
    trainer = Trainer(
        model,
        step,
        train_batches,
        config=config,
        val_batches=val_batches,
        run_dir=out_dir,
        model_name=name,
        model_meta=_model_meta(model, labeled, "finetune"),
        lr_mult=lr_mult,
        run_config={
            "task": "finetune",
            "data": _data_summary(labeled=labeled, val=val, unlabeled=unlabeled),
            "augment": augment is not None,
        },
    )
    if config.freeze_encoder_epochs > 0:
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ValueError("freeze_encoder_epochs needs a model with an 'encoder' submodule")
        start, end = _freeze_encoder(encoder, config.freeze_encoder_epochs)
        trainer.add_callback("on_train_epoch_start", start)
        trainer.add_callback("on_fit_end", end)
    return trainer.fit(resume=resume, overwrite=overwrite)


# ----------------------------------------------------------------------------- inference

#: What the inference functions read: images in memory, or a view read batch by batch.
Images = ImageDataset | ImageRows | torch.Tensor | np.ndarray


def _images(model: nn.Module, data: Images, what: str = "data") -> torch.Tensor | ImageRows:
    """uint8 images (N, C, H, W) as a tensor, or an :class:`ImageRows` view left unread."""
    if isinstance(data, ImageRows):
        _check_images(model, data.image_shape, what)
        return data
    if isinstance(data, ImageDataset):
        images = data.images
    else:
        images = torch.as_tensor(data)
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError(
                f"{what} must be an ImageDataset, ImageRows or uint8 images of shape (N, C, H, W), "
                f"got {images.dtype} of shape {tuple(images.shape)}"
            )
    _check_images(model, tuple(images.shape[1:]), what)
    return images


@torch.no_grad()
def _iter_batches(
    model: nn.Module,
    images: torch.Tensor | ImageRows,
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    device: str | torch.device,
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, fn(model, x))`` for consecutive float batches ``x`` of ``images``, in eval mode.

    Only one batch of images is read at a time (an :class:`ImageRows` view is
    read row range by row range); outputs are float32 on the CPU. The model
    stays in eval mode until the generator is exhausted or closed.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    n = len(images)
    try:
        for i in range(0, n, batch_size):
            stop = min(i + batch_size, n)
            if isinstance(images, ImageRows):
                u8 = images.read(torch.arange(i, stop))
            else:
                u8 = images[i:stop]
            x = u8.to(dev, non_blocking=True).float().div_(255)
            yield i, fn(model, x).float().cpu()
    finally:
        model.train(was_training)


def _map_batches(
    model: nn.Module,
    images: torch.Tensor | ImageRows,
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    batch_size: int,
    device: str | torch.device,
) -> torch.Tensor:
    """Apply ``fn(model, x)`` to float batches of ``images`` in eval mode; concat results on CPU."""
    outs = [
        out for _, out in _iter_batches(model, images, fn, batch_size=batch_size, device=device)
    ]
    if not outs:
        raise ValueError("no images given")
    return torch.cat(outs)


def predict(
    model: nn.Module,
    data: Images,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Class of every image.

    Parameters
    ----------
    model : torch.nn.Module
        A model with ``encode`` and ``classify``; moved to ``device``.
    data : ImageDataset, ImageRows or uint8 tensor of shape (n_samples, C, H, W)
    batch_size : int
    device : str or torch.device

    Returns
    -------
    labels : ndarray of shape (n_samples,), int64
    probs : ndarray of shape (n_samples, n_classes), float32
        Softmax probabilities.
    """
    images = _images(model, data)
    logits = _map_batches(
        model, images, lambda m, x: m.classify(m.encode(x)), batch_size=batch_size, device=device
    )
    probs = torch.softmax(logits, dim=1)
    return probs.argmax(1).numpy().astype(np.int64), probs.numpy().astype(np.float32)


def evaluate(
    model: nn.Module,
    data: ImageDataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> dict[str, Any]:
    """Accuracy, per-class accuracy and confusion matrix on labelled images.

    Returns
    -------
    dict
        ``accuracy`` (float), ``per_class_accuracy`` (ndarray of shape
        (n_classes,), NaN for a class without images), ``confusion_matrix``
        (ndarray of shape (n_classes, n_classes), rows true, columns predicted),
        ``n_samples``.
    """
    _check_dataset(model, data, "data", labels=True)
    pred, probs = predict(model, data, batch_size=batch_size, device=device)
    assert data.labels is not None
    true = data.labels.numpy()
    k = max(probs.shape[1], data.num_classes or 0)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (true, pred), 1)
    support = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    return {
        "accuracy": float((pred == true).mean()),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm,
        "n_samples": len(true),
    }


def iter_encode(
    model: nn.Module,
    data: Images,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> Iterator[tuple[int, np.ndarray]]:
    """Latent vectors batch by batch, for data whose latents do not fit in memory.

    Parameters
    ----------
    model : torch.nn.Module
        A model with ``encode``; moved to ``device`` and kept in eval mode
        until the iterator is exhausted or closed.
    data : ImageDataset, ImageRows or uint8 tensor of shape (n_samples, C, H, W)
        An :class:`~aelab.data.ImageRows` view (of a memory map or an image
        folder stream) is read one batch at a time.
    batch_size : int
        Images per forward pass (and rows per yielded block).
    device : str or torch.device

    Yields
    ------
    start : int
        Position in ``data`` of the block's first row.
    z : ndarray of shape (n_batch, latent_dim), float32
        Latent vectors of rows ``start`` to ``start + n_batch - 1``.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    images = _images(model, data)
    blocks = _iter_batches(
        model, images, lambda m, x: m.encode(x), batch_size=int(batch_size), device=device
    )
    return ((start, z.numpy()) for start, z in blocks)


def encode(
    model: nn.Module,
    data: Images,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """Latent vectors: ndarray of shape (n_samples, latent_dim), float32.

    All of them in memory; :func:`iter_encode` yields them batch by batch.
    """
    parts = [z for _, z in iter_encode(model, data, batch_size=batch_size, device=device)]
    if not parts:
        raise ValueError("no images given")
    return np.concatenate(parts)


def reconstruct(
    model: nn.Module,
    images: Images,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> torch.Tensor:
    """Reconstructions: float tensor of shape (n_samples, C, H, W) in [0, 1], on the CPU.

    ``images`` are uint8 (n_samples, C, H, W), an ImageDataset or an ImageRows view.
    """
    x = _images(model, images, "images")
    return _map_batches(
        model, x, lambda m, b: m.decode(m.encode(b)), batch_size=batch_size, device=device
    )


def map_batches(
    model: nn.Module,
    images: Images,
    fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
) -> torch.Tensor:
    """Apply ``fn(model, x)`` to float batches in [0, 1] of ``images``, in eval mode, without gradients.

    Parameters
    ----------
    model : torch.nn.Module
    images : ImageDataset, ImageRows or uint8 tensor of shape (n_samples, C, H, W)
    fn : callable
        Maps ``(model, x)`` with ``x`` of shape (B, C, H, W) to a tensor whose
        first axis is B.

    Returns
    -------
    torch.Tensor
        The outputs of every batch, concatenated on the CPU.
    """
    return _map_batches(model, _images(model, images), fn, batch_size=batch_size, device=device)
