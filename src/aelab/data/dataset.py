"""The one in-memory form every data source is turned into."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ImageDataset:
    """Images as uint8, with optional labels, stable ids and class names.

    Attributes
    ----------
    images : torch.Tensor of shape (n_samples, channels, height, width), uint8
        Pixel values 0-255, channels first.
    labels : torch.Tensor of shape (n_samples,), int64, or None
        Class indices in ``[0, len(class_names))``; ``None`` for unlabeled data.
    ids : list of str, length n_samples
        One id per image (file stem, or row index as text), kept for CSV output.
    class_names : list of str or None
        Name of each class index; ``None`` when unknown (then names are indices).
    skipped : list of (str, str)
        Files left out while loading with ``skip_bad=True``: (path, reason).
        Empty otherwise; not carried over by :meth:`subset`.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]
    class_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        n = self.images.shape[0]
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} images")
        if self.labels is not None:
            if self.labels.shape != (n,):
                raise ValueError(f"labels must have shape ({n},), got {tuple(self.labels.shape)}")
            self.labels = self.labels.long()
            if n:
                lo, hi = int(self.labels.min()), int(self.labels.max())
                if lo < 0:
                    raise ValueError(f"labels must be >= 0, got {lo}")
                if self.class_names is not None and hi >= len(self.class_names):
                    raise ValueError(
                        f"label {hi} is out of range for {len(self.class_names)} class names "
                        f"({', '.join(self.class_names)}); labels must be in [0, {len(self.class_names)})"
                    )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int | None:
        """Number of classes, from the names or else the largest label + 1."""
        if self.class_names is not None:
            return len(self.class_names)
        if self.labels is not None and len(self.labels):
            return int(self.labels.max()) + 1
        return None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: np.ndarray | torch.Tensor | list[int]) -> ImageDataset:
        """The rows ``index`` (in that order) as a new dataset."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ImageDataset(
            images=self.images[idx],
            labels=None if self.labels is None else self.labels[idx],
            ids=[self.ids[i] for i in idx.tolist()],
            class_names=self.class_names,
        )

    def class_name(self, label: int) -> str:
        """Display name of class index ``label``."""
        if self.class_names is not None:
            return self.class_names[label]
        return str(label)
