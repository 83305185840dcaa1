"""Pre-training and fine-tuning of the convolutional autoencoder family.

:func:`pretrain` trains on reconstruction without labels; :func:`finetune`
trains the encoder and a classifier head on few labels, optionally with
FixMatch on the unlabeled images and a reconstruction term. Both build the
batches and the step function and hand them to the model-agnostic
:class:`~aelab.training.loop.Trainer`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.nn as nn

from aelab.data.dataset import ImageDataset, check_classes
from aelab.data.streaming import ImageRows
from aelab.runtime import resolve_device
from aelab.training import distributed as dist_utils
from aelab.training.batching import batch_factory, check_dataset
from aelab.training.configs import FinetuneConfig, PretrainConfig
from aelab.training.loop import Trainer, TrainResult
from aelab.training.semisup import fixmatch_step, make_strong_augment
from aelab.training.steps import Augment, classification_step, reconstruction_step

__all__ = ["finetune", "pretrain"]


# ----------------------------------------------------------------------------- training


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
    check_dataset(model, data, "data")
    if val is not None:
        check_dataset(model, val, "val")
    if len(data) < 2:
        raise ValueError("pre-training needs at least 2 images (batch norm)")
    _check_num_workers(num_workers)
    dist_utils.init_from_env(config.device)
    device = resolve_device(config.device)
    name = _model_name(model, model_name) if out_dir is not None else model_name
    train_batches = batch_factory(
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
        val_batches = batch_factory(
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
    unlabeled = _check_finetune_data(model, labeled, val, unlabeled, config)
    k = labeled.num_classes
    assert k is not None
    if getattr(getattr(model, "config", None), "num_classes", k) != k:
        model.reset_classifier(k)  # type: ignore[operator]
    if config.monitor is None and val is not None:
        config = dataclasses.replace(config, monitor="val_acc")
    _check_num_workers(num_workers)
    dist_utils.init_from_env(config.device)
    device = resolve_device(config.device)
    semi = config.semi != "none"
    train_batches = batch_factory(
        labeled, batch_size=config.batch_size, shuffle=True, seed=config.seed, device=device,
        labels=True, unlabeled=unlabeled,
        unlabeled_batch_size=config.batch_size * (config.unlabeled_ratio if semi else 1),
        epoch_over_unlabeled=semi, min_epoch_steps=config.min_epoch_steps,
        num_workers=num_workers,
    )  # fmt: skip
    val_batches = None
    if val is not None:
        val_batches = batch_factory(
            val, batch_size=max(config.batch_size, 256), shuffle=False, seed=config.seed,
            device=device, labels=True,
        )  # fmt: skip
    trainer = Trainer(
        model, _finetune_step(config, augment), train_batches, config=config,
        val_batches=val_batches, run_dir=out_dir,
        model_name=_model_name(model, model_name) if out_dir is not None else model_name,
        model_meta=_model_meta(model, labeled, "finetune"),
        lr_mult={"encoder.": config.encoder_lr_mult} if config.encoder_lr_mult != 1 else None,
        run_config={
            "task": "finetune",
            "data": _data_summary(labeled=labeled, val=val, unlabeled=unlabeled),
            "augment": augment is not None,
        },
    )  # fmt: skip
    if config.freeze_encoder_epochs > 0:
        encoder = getattr(model, "encoder", None)
        if not isinstance(encoder, nn.Module):
            raise ValueError("freeze_encoder_epochs needs a model with an 'encoder' submodule")
        start, end = _freeze_encoder(encoder, config.freeze_encoder_epochs)
        trainer.add_callback("on_train_epoch_start", start)
        trainer.add_callback("on_fit_end", end)
    return trainer.fit(resume=resume, overwrite=overwrite)


def _check_finetune_data(
    model: nn.Module, labeled: Any, val: Any, unlabeled: Any, config: FinetuneConfig
) -> ImageDataset | ImageRows | None:
    """Check the three sets against the model and the config; the unlabeled set to use."""
    check_dataset(model, labeled, "labeled", labels=True)
    if val is not None:
        check_dataset(model, val, "val", labels=True)
    if unlabeled is not None:
        check_dataset(model, unlabeled, "unlabeled")
        if not config.uses_unlabeled:
            warnings.warn(
                "unlabeled images are used by semi='fixmatch' or the reconstruction term; "
                "set one of them to use them (ignored now)",
                stacklevel=3,
            )
            unlabeled = None
    elif config.semi != "none":
        raise ValueError(
            f"semi={config.semi!r} learns from unlabeled images; pass unlabeled=... "
            "(e.g. the unlabeled part of split_dataset) or set semi='none'"
        )
    if len(labeled) < 2:
        raise ValueError("fine-tuning needs at least 2 labelled images (batch norm)")
    k = check_classes(labeled.labels, labeled.class_names, "labeled")
    if val is not None and val.labels is not None and int(val.labels.max()) >= k:
        raise ValueError(
            f"val has label {int(val.labels.max())} but labeled has only {k} classes; "
            "give both sets the same class names"
        )
    return unlabeled


def _finetune_step(config: FinetuneConfig, augment: Augment | None) -> Callable[..., Any]:
    """The step function of a fine-tuning run: FixMatch or plain classification."""
    if config.semi == "fixmatch":
        return fixmatch_step(
            weak=augment, strong=make_strong_augment(), threshold=config.threshold,
            unlabeled_weight=config.unlabeled_weight, label_smoothing=config.label_smoothing,
            recon_weight=config.recon_weight, recon_loss=config.recon_loss,
            align=config.distribution_alignment,
        )  # fmt: skip
    return classification_step(
        augment=augment, label_smoothing=config.label_smoothing,
        recon_weight=config.recon_weight, recon_loss=config.recon_loss,
    )  # fmt: skip
