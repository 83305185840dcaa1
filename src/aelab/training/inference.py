"""Batched inference with a trained autoencoder: predict, evaluate, encode, reconstruct.

Every function reads one batch of images at a time (an
:class:`~aelab.data.ImageRows` view is read row range by row range) and runs
the model in eval mode without gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from aelab.data.dataset import ImageDataset
from aelab.data.streaming import ImageRows
from aelab.runtime import resolve_device
from aelab.training.batching import check_dataset, check_images

__all__ = ["encode", "evaluate", "iter_encode", "map_batches", "predict", "reconstruct"]

# ----------------------------------------------------------------------------- inference

#: What the inference functions read: images in memory, or a view read batch by batch.
Images = ImageDataset | ImageRows | torch.Tensor | np.ndarray


def _images(model: nn.Module, data: Images, what: str = "data") -> torch.Tensor | ImageRows:
    """uint8 images (N, C, H, W) as a tensor, or an :class:`ImageRows` view left unread."""
    if isinstance(data, ImageRows):
        check_images(model, data.image_shape, what)
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
    check_images(model, tuple(images.shape[1:]), what)
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
    check_dataset(model, data, "data", labels=True)
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
