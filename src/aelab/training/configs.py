"""Settings of pre-training and fine-tuning, and the named fine-tuning recipes.

One settings class per task: :class:`PretrainConfig` and :class:`FinetuneConfig`
extend the loop's :class:`~aelab.training.loop.TrainConfig` with what each task
adds (the model, the augmentation, how the images are split); their defaults
are aelab's defaults. :data:`FINETUNE_RECIPES` names sets of
:class:`FinetuneConfig` values that differ from those defaults, and
``FinetuneConfig.recipe(name)`` builds one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from aelab.data.augment import PRESETS
from aelab.training.loop import TrainConfig
from aelab.training.semisup import SEMI_METHODS
from aelab.training.steps import RECON_LOSSES

__all__ = [
    "FINETUNE_RECIPES", "FinetuneConfig", "PretrainConfig", "check_model_keys", "finetune_recipe",
]  # fmt: skip


def _check_task(augment: str, model: str, val_fraction: float) -> None:
    if augment not in PRESETS:
        raise ValueError(f"augment {augment!r}: choose one of {', '.join(PRESETS)}")
    if not model:
        raise ValueError("model: give a registered model name or auto")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")


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

    epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 128
    loss: str = "mse"
    mask_ratio: float = 0.0
    mask_patch: int = 4
    model: str = "auto"
    model_overrides: dict[str, Any] | None = None
    augment: str = "none"
    val_fraction: float = 0.05
    max_images: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_task(self.augment, self.model, self.val_fraction)
        if self.max_images < 0:
            raise ValueError(f"max_images must be >= 0 (0: all), got {self.max_images}")
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
        check_model_keys(self.model_overrides)


def check_model_keys(overrides: dict[str, Any] | None) -> None:
    """Refuse a ``model_overrides`` key that is no field of the model's config.

    Every registered model is a ``convae`` family member, so its config is a
    :class:`~aelab.models.ConvAEConfig`; the values are checked against the
    field types by the task (``aelab.tasks.modeling.check_model_overrides``)
    and their ranges when the model is built.
    """
    if overrides is None:
        return
    from aelab.models import ConvAEConfig

    if not isinstance(overrides, dict):
        raise ValueError(f"model_overrides must be a table of settings, got {overrides!r}")
    known = {f.name for f in dataclasses.fields(ConvAEConfig) if f.init}
    for key in overrides:
        if key not in known:
            raise ValueError(
                f"unknown setting 'model_overrides.{key}'; known settings: {', '.join(sorted(known))}"
            )


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
    min_epoch_steps : int
        With ``semi``, the fewest steps an epoch has: an epoch is one pass
        over the unlabeled images or this many steps, whichever is longer
        (the unlabeled images then come round again in the same order). A
        schedule counted in passes otherwise shrinks with the unlabeled pool:
        3 passes over 8,000 images are 125 steps, too few to learn from.
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

    Notes
    -----
    With ``semi`` other than ``"none"``, an epoch is one pass over the
    unlabeled images (``len(unlabeled) // (batch_size * unlabeled_ratio)``
    steps, at least ``min_epoch_steps``) while the labelled images repeat;
    otherwise one pass over the labelled images.

    Examples
    --------
    >>> FinetuneConfig.recipe("plain", epochs=5).semi
    'none'
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
    min_epoch_steps: int = 0
    model: str = "auto"
    augment: str = "standard"
    labels_per_class: int = 0
    val_per_class: int = 0
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_task(self.augment, self.model, self.val_fraction)
        for name in ("labels_per_class", "val_per_class"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: all), got {getattr(self, name)}")
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
        if isinstance(self.min_epoch_steps, bool) or self.min_epoch_steps < 0:
            raise ValueError(f"min_epoch_steps must be >= 0, got {self.min_epoch_steps}")

    @classmethod
    def recipe(cls, name: str = "default", **overrides: Any) -> FinetuneConfig:
        """The settings of a named recipe (a key of :data:`FINETUNE_RECIPES`), with overrides.

        Parameters
        ----------
        name : str
            ``"default"`` (FixMatch on the unlabeled images), ``"fixmatch"``
            or ``"plain"`` (supervised fine-tuning only).
        **overrides
            Fields replacing the recipe's; ``None`` values are ignored, so an
            unset option falls through to the recipe.

        Raises
        ------
        ValueError
            For an unknown recipe or field, or a value the field refuses.
        """
        if name not in FINETUNE_RECIPES:
            raise ValueError(
                f"unknown fine-tuning recipe {name!r}; use one of {', '.join(FINETUNE_RECIPES)}"
            )
        values = {**FINETUNE_RECIPES[name], **{k: v for k, v in overrides.items() if v is not None}}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown FinetuneConfig fields: {', '.join(unknown)}")
        return cls(**values)

    @property
    def uses_unlabeled(self) -> bool:
        """Whether this recipe learns from unlabeled images (FixMatch or a reconstruction term)."""
        return self.semi != "none" or self.recon_weight > 0


# ----------------------------------------------------------------------------- named recipes

#: Fine-tuning recipes by name: each is a set of :class:`FinetuneConfig` fields
#: (``augment`` is FixMatch's weak view). ``benchmarks/fewlabel.py`` measures
#: them; ``"default"`` is what ``aelab finetune`` uses (``FinetuneConfig.recipe``).
FINETUNE_RECIPES: dict[str, dict[str, Any]] = {
    # Supervised fine-tuning on the labelled images only (aelab's recipe before
    # FixMatch): FinetuneConfig's own defaults, with standard augmentation.
    "plain": {"augment": "standard"},
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
        "encoder_lr_mult": 1.0,
        "label_smoothing": 0.0,
        "threshold": 0.8,
        # An epoch is at least 250 steps (Fashion-MNIST's 60,000 unlabeled
        # images give 312, unchanged): on a pool of 8,000 the 3 passes were 125 steps and
        # the recipe lost to plain fine-tuning's 450 (docs/results.md, "Few labels").
        "min_epoch_steps": 250,
    },
}
FINETUNE_RECIPES["default"] = dict(FINETUNE_RECIPES["fixmatch"])


def finetune_recipe(name: str = "default", **overrides: Any) -> tuple[FinetuneConfig, str]:
    """Deprecated: ``FinetuneConfig.recipe(name, **overrides)`` and its ``augment``.

    Kept so that older code keeps working; the augmentation preset is now a
    field of :class:`FinetuneConfig`.

    Returns
    -------
    config : FinetuneConfig
    augment : str
        ``config.augment``.
    """
    config = FinetuneConfig.recipe(name, **overrides)
    return config, config.augment
