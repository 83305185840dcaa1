"""Step functions for :class:`aelab.training.Trainer`: the only place that knows the model.

A step is ``step(model, batch, stage) -> dict`` (``stage`` is ``"train"`` or
``"val"``), like Lightning's ``_common_step``: training and validation share it
and only the stage decides whether augmentation and label smoothing apply.

The model is expected to offer ``encode(x) -> z``, ``decode(z) -> x_hat``
(values in [0, 1]) and ``classify(z) -> logits``, as
:class:`aelab.models.ConvAutoencoder` does. Batches are float images
(B, C, H, W) in [0, 1] on the device, optionally with labels; see
:func:`unpack_batch`. Augmentation is any callable from such a batch to one
of the same shape.

Losses are always computed in float32 with autocast turned off, so that
``amp="bf16"`` speeds up the network without coarsening the loss (and
because binary cross-entropy refuses to run under CUDA autocast).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "RECON_LOSSES",
    "Augment",
    "classification_step",
    "reconstruction_loss",
    "reconstruction_step",
    "unpack_batch",
]

#: A batch transform: float (B, C, H, W) in [0, 1] -> same shape, on the same device.
Augment = Callable[[torch.Tensor], torch.Tensor]

RECON_LOSSES = ("mse", "l1", "bce")


def unpack_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Split a batch into ``(images, labels or None, unlabeled images or None)``.

    Accepted forms: a tensor of images; a tuple ``(images,)``,
    ``(images, labels)`` or ``(images, labels, unlabeled_images)``; a mapping
    with keys ``"images"``, optionally ``"labels"`` and ``"unlabeled"``.
    """
    if isinstance(batch, torch.Tensor):
        return batch, None, None
    if isinstance(batch, tuple | list):
        if not 1 <= len(batch) <= 3:
            raise ValueError(
                f"a batch tuple has 1 to 3 entries (images, labels, unlabeled), got {len(batch)}"
            )
        x, y, xu = (*batch, None, None)[:3]
        return x, y, xu
    if isinstance(batch, Mapping):
        if "images" not in batch:
            raise ValueError(f"a batch mapping needs an 'images' entry, got keys {sorted(batch)}")
        return batch["images"], batch.get("labels"), batch.get("unlabeled")
    raise ValueError(
        f"cannot read a batch of type {type(batch).__name__}; give images or (images, labels)"
    )


def check_supervised_options(label_smoothing: float, recon_weight: float, recon_loss: str) -> None:
    """Validate the options every labelled step shares (classification, FixMatch)."""
    _check_loss(recon_loss)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if recon_weight < 0:
        raise ValueError(f"recon_weight must be >= 0, got {recon_weight}")


def _check_loss(kind: str) -> None:
    if kind not in RECON_LOSSES:
        raise ValueError(
            f"unknown reconstruction loss {kind!r}; use one of {', '.join(RECON_LOSSES)}"
        )


def reconstruction_loss(
    recon: torch.Tensor, target: torch.Tensor, kind: str = "mse"
) -> torch.Tensor:
    """Mean reconstruction loss in float32.

    Parameters
    ----------
    recon, target : torch.Tensor of shape (B, C, H, W)
        Reconstruction and target, both in [0, 1].
    kind : {"mse", "l1", "bce"}
        Mean squared error, mean absolute error, or binary cross-entropy
        (the decoder ends in a sigmoid, so its output is a probability).

    Returns
    -------
    torch.Tensor
        A scalar.
    """
    _check_loss(kind)
    return _recon_loss(recon, target, kind)


def _recon_loss(recon: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    with torch.autocast(recon.device.type, enabled=False):
        r, t = recon.float(), target.float()
        if kind == "mse":
            return F.mse_loss(r, t)
        if kind == "l1":
            return F.l1_loss(r, t)
        return F.binary_cross_entropy(r, t)


def _augment(augment: Augment | None, x: torch.Tensor) -> torch.Tensor:
    # Clipping keeps BCE targets valid whatever the augmentation does.
    return x if augment is None else augment(x).clamp(0, 1)


def mask_patches(x: torch.Tensor, ratio: float, patch: int) -> torch.Tensor:
    """Hide a random share ``ratio`` of the ``patch`` x ``patch`` squares of each image.

    Hidden squares take the image's mean value, so the network cannot tell
    them from content by their level alone. ``x`` is (B, C, H, W); the result
    has the same shape. Squares are drawn independently per image.
    """
    b, c, h, w = x.shape
    gh, gw = -(-h // patch), -(-w // patch)
    hide = torch.rand(b, 1, gh, gw, device=x.device) < ratio
    hide = hide.repeat_interleave(patch, 2).repeat_interleave(patch, 3)[:, :, :h, :w]
    fill = x.mean(dim=(1, 2, 3), keepdim=True)
    return torch.where(hide, fill.to(x.dtype), x)


def reconstruction_step(
    *, loss: str = "mse", augment: Augment | None = None, mask_ratio: float = 0.0,
    mask_patch: int = 4,
) -> Callable[[nn.Module, Any, str], dict[str, Any]]:  # fmt: skip
    """A pre-training step: reconstruct the (augmented) input.

    In training the input is augmented and the target is that same augmented
    image: the standard autoencoder objective (the network learns to encode
    every augmented view, rather than to undo the augmentation as a denoising
    autoencoder would). With ``mask_ratio`` > 0 the network sees the image
    with random squares hidden and must reconstruct all of it (masked-patch
    reconstruction, a denoising objective in the spirit of He et al., 2022,
    "Masked Autoencoders"). Validation uses the images as they are.

    Parameters
    ----------
    loss : {"mse", "l1", "bce"}
        Reconstruction loss, see :func:`reconstruction_loss`.
    augment : callable, optional
        Batch augmentation applied in the ``"train"`` stage only.
    mask_ratio : float in [0, 1)
        Share of squares hidden from the encoder in training (0: plain autoencoder).
    mask_patch : int
        Side of the hidden squares in pixels.

    Returns
    -------
    callable
        ``step(model, batch, stage)`` returning ``loss``, ``n`` and, when the
        loss is not already MSE, ``mse`` (so runs with different losses compare).
    """
    _check_loss(loss)
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if mask_patch < 1:
        raise ValueError(f"mask_patch must be >= 1 pixel, got {mask_patch}")

    def step(model: nn.Module, batch: Any, stage: str) -> dict[str, Any]:
        x, _, _ = unpack_batch(batch)
        seen = x
        if stage == "train":
            x = seen = _augment(augment, x)
            if mask_ratio > 0:
                seen = mask_patches(x, mask_ratio, mask_patch)
        recon = model.decode(model.encode(seen))
        out: dict[str, Any] = {"loss": _recon_loss(recon, x, loss), "n": x.shape[0]}
        if loss != "mse":
            out["mse"] = _recon_loss(recon.detach(), x, "mse")
        return out

    return step


def classification_step(
    *,
    augment: Augment | None = None,
    label_smoothing: float = 0.0,
    recon_weight: float = 0.0,
    recon_loss: str = "mse",
) -> Callable[[nn.Module, Any, str], dict[str, Any]]:
    """A fine-tuning step: cross-entropy, plus an optional reconstruction term.

    Training loss: ``CE(logits, y; label_smoothing) + recon_weight * recon``,
    where ``recon`` is the reconstruction loss of the (augmented) labelled
    images and, when the batch carries them, of unlabeled images too (which is
    how unlabeled data keeps shaping the encoder during fine-tuning).
    Validation loss: plain cross-entropy, without smoothing.

    Parameters
    ----------
    augment : callable, optional
        Batch augmentation applied in the ``"train"`` stage only.
    label_smoothing : float
        In [0, 1); applied in training only.
    recon_weight : float
        Weight of the reconstruction term (0 skips the decoder entirely).
    recon_loss : {"mse", "l1", "bce"}
        Which reconstruction loss.

    Returns
    -------
    callable
        ``step(model, batch, stage)`` returning ``loss``, ``acc`` (accuracy of
        the batch), ``n`` and, with a reconstruction term in training, ``ce``
        and ``recon``.
    """
    check_supervised_options(label_smoothing, recon_weight, recon_loss)

    def step(model: nn.Module, batch: Any, stage: str) -> dict[str, Any]:
        x, y, xu = unpack_batch(batch)
        if y is None:
            raise ValueError("classification_step needs labelled batches: (images, labels)")
        train = stage == "train"
        out: dict[str, Any] = {"n": x.shape[0]}
        if train:
            x = _augment(augment, x)
        if train and recon_weight > 0:
            inputs = x if xu is None else torch.cat([x, _augment(augment, xu)])
            z = model.encode(inputs)
            logits = model.classify(z[: x.shape[0]])
            rec = _recon_loss(model.decode(z), inputs, recon_loss)
        else:
            logits = model.classify(model.encode(x))
            rec = None
        with torch.autocast(logits.device.type, enabled=False):
            ce = F.cross_entropy(
                logits.float(), y, label_smoothing=label_smoothing if train else 0.0
            )
        if rec is not None:
            out.update(loss=ce + recon_weight * rec, ce=ce.detach(), recon=rec.detach())
        else:
            out["loss"] = ce
        out["acc"] = (logits.detach().argmax(1) == y).float().mean()
        return out

    return step
