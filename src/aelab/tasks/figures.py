"""The figures of an anomaly evaluation: ROC curve, score histogram, most and least anomalous images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aelab.data.dataset import ImageDataset

__all__ = ["anomaly_figures"]


def _pick(sets: list[ImageDataset], n_first: int, idx: np.ndarray) -> ImageDataset:
    """Rows ``idx`` of the two sets laid end to end (indices past ``n_first`` are in the second)."""
    import torch

    rows = [(0, i) if i < n_first else (1, i - n_first) for i in idx.tolist()]
    images = torch.stack([sets[s].images[j] for s, j in rows])
    return ImageDataset(images=images, labels=None, ids=[sets[s].ids[j] for s, j in rows])


def anomaly_figures(
    det: Any,
    normal: ImageDataset,
    anomalous: ImageDataset,
    scores: tuple[np.ndarray, np.ndarray],
    out: Path,
    *,
    n_show: int = 8,
) -> dict[str, Path]:
    """Write the figures of a detector's scores on ``normal`` and ``anomalous`` into ``out``.

    ``scores`` are the detector's scores of the two sets. Returns figure name -> PNG path:
    ``roc``, ``histogram``, ``most_anomalous`` and ``least_anomalous`` (image,
    reconstruction and error map of the ``n_show`` highest and lowest scores).
    """
    from aelab import viz

    s_n, s_a = scores
    both = np.r_[s_n, s_a]
    y = np.r_[np.zeros(len(s_n)), np.ones(len(s_a))]
    figs = {
        "roc": viz.roc_curve_plot(y, both, label=f"{'+'.join(det.score_parts_)} score"),
        "histogram": viz.score_histogram(s_n, s_a, threshold=det.threshold_),
    }
    order = np.argsort(both)
    for name, idx in (
        ("most_anomalous", order[::-1][:n_show]),
        ("least_anomalous", order[:n_show]),
    ):
        sub = _pick([normal, anomalous], len(s_n), idx)
        recon, maps = det.score_maps(sub)
        figs[name] = viz.image_grid(
            [sub.images.numpy(), recon, maps], row_titles=["image", "reconstruction", "error"],
            row_cmaps=[None, None, "inferno"], col_titles=[f"{both[i]:.4g}" for i in idx],
            max_cols=n_show,
        )  # fmt: skip
    return {name: viz.save_figure(fig, out / f"{name}.png") for name, fig in figs.items()}
