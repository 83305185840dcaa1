"""Settings of pre-training and fine-tuning, and the named fine-tuning recipes.

:class:`PretrainConfig` and :class:`FinetuneConfig` extend the loop's
:class:`~aelab.training.loop.TrainConfig` with what each task adds; their
defaults are aelab's defaults. :data:`FINETUNE_RECIPES` names sets of
:class:`FinetuneConfig` values (and the augmentation preset) that differ from
those defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from aelab.training.loop import TrainConfig
from aelab.training.semisup import SEMI_METHODS
from aelab.training.steps import RECON_LOSSES

__all__ = ["FINETUNE_RECIPES", "FinetuneConfig", "PretrainConfig", "finetune_recipe"]


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

    epochs: int = 10
    lr: float = 2e-3
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
    min_epoch_steps : int
        With ``semi``, the fewest steps an epoch has: an epoch is one pass
        over the unlabeled images or this many steps, whichever is longer
        (the unlabeled images then come round again in the same order). A
        schedule counted in passes otherwise shrinks with the unlabeled pool:
        3 passes over 8,000 images are 125 steps, too few to learn from.

    Notes
    -----
    With ``semi`` other than ``"none"``, an epoch is one pass over the
    unlabeled images (``len(unlabeled) // (batch_size * unlabeled_ratio)``
    steps, at least ``min_epoch_steps``) while the labelled images repeat;
    otherwise one pass over the labelled images.
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
        if isinstance(self.min_epoch_steps, bool) or self.min_epoch_steps < 0:
            raise ValueError(f"min_epoch_steps must be >= 0, got {self.min_epoch_steps}")

    @property
    def uses_unlabeled(self) -> bool:
        """Whether this recipe learns from unlabeled images (FixMatch or a reconstruction term)."""
        return self.semi != "none" or self.recon_weight > 0


# ----------------------------------------------------------------------------- named recipes

#: Fine-tuning recipes by name: each is a set of :class:`FinetuneConfig` fields
#: (plus ``augment``, the weak augmentation preset). ``benchmarks/fewlabel.py``
#: measures them; ``"default"`` is what ``aelab finetune`` uses.
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
