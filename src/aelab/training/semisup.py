"""Semi-supervised fine-tuning: learning from the unlabeled images as well.

:func:`fixmatch_step` implements FixMatch (Sohn et al., 2020, "FixMatch:
Simplifying Semi-Supervised Learning with Consistency and Confidence"): the
model labels a weakly augmented view of each unlabeled image; where it is
confident (maximum probability >= ``threshold``) that label becomes the target
of a strongly augmented view of the same image. With few labels this is what
lets the unlabeled pool shape the decision boundary, which reconstruction
alone does not.

:func:`make_strong_augment` is the strong view for images: a wide random
affine warp and contrast/brightness change (aelab's :class:`~aelab.data.augment.Augment`)
followed by Cutout (DeVries & Taylor, 2017), a square of gray pasted at a
random place, as FixMatch does after RandAugment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from aelab.training.steps import (
    Augment,
    _augment,
    _recon_loss,
    check_supervised_options,
    unpack_batch,
)

__all__ = ["SEMI_METHODS", "Cutout", "fixmatch_step", "make_strong_augment"]

#: Values of ``FinetuneConfig.semi``.
SEMI_METHODS = ("none", "fixmatch")


class Cutout(nn.Module):
    """Paste one square of constant value at a random place of each image.

    Parameters
    ----------
    size : float in (0, 1]
        Side of the square as a fraction of the image side; the square may be
        clipped at the border, as in the original Cutout.
    value : float
        Fill value (images are in [0, 1]; 0.5 is FixMatch's gray).
    """

    def __init__(self, size: float = 0.5, value: float = 0.5) -> None:
        super().__init__()
        if not 0.0 < size <= 1.0:
            raise ValueError(f"cutout size must be a fraction in (0, 1], got {size}")
        self.size = float(size)
        self.value = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` of shape (B, C, H, W) -> same shape, one square filled per image."""
        if not self.training or x.shape[0] == 0:
            return x
        b, _, h, w = x.shape
        ch, cw = max(1, round(self.size * h)), max(1, round(self.size * w))
        # Centres anywhere in the image, so squares near the border are partly outside.
        cy = torch.randint(0, h, (b, 1, 1), device=x.device)
        cx = torch.randint(0, w, (b, 1, 1), device=x.device)
        rows = torch.arange(h, device=x.device).view(1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, w)
        inside = (
            (rows >= cy - ch // 2)
            & (rows < cy - ch // 2 + ch)
            & (cols >= cx - cw // 2)
            & (cols < cx - cw // 2 + cw)
        )  # (B, H, W)
        return x.masked_fill(inside.unsqueeze(1), self.value)


def make_strong_augment(*, cutout: float = 0.5, **overrides: Any) -> nn.Module:
    """The strong view of FixMatch: a wide affine and colour change, then Cutout.

    Parameters
    ----------
    cutout : float in [0, 1]
        Side of the Cutout square as a fraction of the image side; 0 turns it off.
    **overrides
        Options of :func:`aelab.data.make_augment` replacing the strong
        defaults (hflip 0.5, brightness and contrast 0.5, rotation up to 30
        degrees, shift up to 20 %, zoom 0.8-1.2).

    Returns
    -------
    torch.nn.Module
        Maps float (B, C, H, W) in [0, 1] to the same shape; identity after ``.eval()``.
    """
    from aelab.data import make_augment

    if not 0.0 <= cutout <= 1.0:
        raise ValueError(f"cutout must be a fraction in [0, 1], got {cutout}")
    params: dict[str, Any] = {
        "hflip": 0.5,
        "brightness": 0.5,
        "contrast": 0.5,
        "degrees": 30.0,
        "translate": 0.2,
        "scale": (0.8, 1.2),
        **overrides,
    }
    parts: list[nn.Module] = [make_augment("standard", **params)]
    if cutout > 0:
        parts.append(Cutout(cutout))
    return nn.Sequential(*parts)


def fixmatch_step(
    *,
    weak: Augment | None,
    strong: Augment,
    threshold: float = 0.95,
    unlabeled_weight: float = 1.0,
    label_smoothing: float = 0.0,
    recon_weight: float = 0.0,
    recon_loss: str = "mse",
    align: bool = False,
) -> Callable[[nn.Module, Any, str], dict[str, Any]]:
    """A FixMatch fine-tuning step on batches ``(images, labels, unlabeled_images)``.

    Training loss::

        CE(f(weak(x)), y)  +  unlabeled_weight * mean_u[ 1{max p_u >= threshold} * CE(f(strong(u)), argmax p_u) ]
                           (+ recon_weight * reconstruction of the inputs)

    where ``p_u = softmax(f(weak(u)))`` is computed without gradients. The
    labelled and strongly augmented unlabeled images go through the network
    in one batch, so batch normalisation sees both. Validation (and training
    batches without unlabeled images) use plain cross-entropy.

    Parameters
    ----------
    weak : callable or None
        Weak augmentation of labelled images and of the view that is labelled
        by the model (e.g. ``make_augment("standard")``).
    strong : callable
        Strong augmentation of the view that learns the pseudo-label (e.g.
        :func:`make_strong_augment`).
    threshold : float in (0, 1]
        Confidence needed for an unlabeled image to count.
    unlabeled_weight : float
        Weight of the unlabeled term (FixMatch's lambda_u).
    label_smoothing : float
        Label smoothing of the labelled cross-entropy, in [0, 1).
    recon_weight : float
        Weight of a reconstruction term on every image of the batch (0 skips
        the decoder).
    recon_loss : {"mse", "l1", "bce"}
    align : bool
        Distribution alignment (Berthelot et al., 2020, ReMixMatch): divide
        ``p_u`` by its mean over the unlabeled batch and renormalise before
        thresholding, so classes the model over-predicts lose pseudo-labels
        and those it under-predicts gain them (aelab assumes balanced classes
        here). Computed from the batch alone, so a resumed run repeats it.

    Returns
    -------
    callable
        ``step(model, batch, stage)`` returning ``loss``, ``acc``, ``n`` and in
        training ``ce``, ``unsup`` (the unlabeled term) and ``mask`` (the share
        of unlabeled images above the threshold), plus ``recon`` when used.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if unlabeled_weight < 0:
        raise ValueError(f"unlabeled_weight must be >= 0, got {unlabeled_weight}")
    check_supervised_options(label_smoothing, recon_weight, recon_loss)

    def step(model: nn.Module, batch: Any, stage: str) -> dict[str, Any]:
        x, y, xu = unpack_batch(batch)
        if y is None:
            raise ValueError("fixmatch_step needs labelled batches: (images, labels, unlabeled)")
        n = x.shape[0]
        if stage != "train" or xu is None:
            logits = model.classify(model.encode(_augment(weak, x) if stage == "train" else x))
            with torch.autocast(logits.device.type, enabled=False):
                ce = F.cross_entropy(logits.float(), y)
            return {"loss": ce, "acc": (logits.detach().argmax(1) == y).float().mean(), "n": n}
        with torch.no_grad():
            probs = torch.softmax(model.classify(model.encode(_augment(weak, xu))).float(), dim=1)
            if align:
                probs = probs / probs.mean(0, keepdim=True).clamp_min(1e-6)
                probs = probs / probs.sum(1, keepdim=True)
            conf, pseudo = probs.max(1)
            mask = (conf >= threshold).float()
        inputs = torch.cat([_augment(weak, x), _augment(strong, xu)])
        z = model.encode(inputs)
        logits = model.classify(z)
        with torch.autocast(logits.device.type, enabled=False):
            lf = logits.float()
            ce = F.cross_entropy(lf[:n], y, label_smoothing=label_smoothing)
            unsup = (F.cross_entropy(lf[n:], pseudo, reduction="none") * mask).mean()
        loss = ce + unlabeled_weight * unsup
        out: dict[str, Any] = {
            "ce": ce.detach(),
            "unsup": unsup.detach(),
            "mask": mask.mean(),
            "acc": (logits[:n].detach().argmax(1) == y).float().mean(),
            "n": n,
        }
        if recon_weight > 0:
            rec = _recon_loss(model.decode(z), inputs, recon_loss)
            loss = loss + recon_weight * rec
            out["recon"] = rec.detach()
        out["loss"] = loss
        return out

    return step
