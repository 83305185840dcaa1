"""Image grids (originals above reconstructions, error maps) and error maps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from aelab.viz._figure import _new_figure

__all__ = ["error_maps", "image_grid"]


def _to_numpy(a: Any) -> np.ndarray:
    """Array-like (including a torch tensor on any device) -> numpy array."""
    if hasattr(a, "detach"):  # a torch tensor: leave autograd and the device behind
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _as_nhwc(images: Any, what: str) -> np.ndarray:
    """Validate a batch of images and return it as float (N, H, W, C) in its own range.

    Accepts (N, H, W), (N, H, W, C) with C in {1, 3, 4}, or channels-first
    (N, C, H, W) with C in {1, 3}. When both readings are possible (e.g.
    (N, 3, 8, 3)) channels-first wins, since that is aelab's own layout.
    uint8 is scaled to [0, 1].
    """
    a = _to_numpy(images)
    if a.ndim == 3:
        a = a[..., None]
    elif a.ndim == 4:
        if a.shape[1] in (1, 3):
            a = np.moveaxis(a, 1, -1)  # (N, C, H, W) -> (N, H, W, C)
        elif a.shape[-1] not in (1, 3, 4):
            raise ValueError(
                f"{what}: cannot find the channel axis in shape {a.shape}; pass "
                "(N, H, W), (N, H, W, C) or (N, C, H, W) with 1 or 3 channels"
            )
    else:
        raise ValueError(
            f"{what}: expected a batch of images of shape (N, H, W), (N, H, W, C) or "
            f"(N, C, H, W), got shape {a.shape}; add a leading batch axis for one image"
        )
    if a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(f"{what}: empty image batch of shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if not (
        np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool
    ):
        raise ValueError(f"{what}: expected numeric pixels, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: contains NaN or infinite pixels")
    return a


def error_maps(originals: Any, reconstructions: Any) -> np.ndarray:
    """Per-pixel squared reconstruction error, averaged over channels.

    Parameters
    ----------
    originals : array-like of shape (n_images, H, W), (n_images, H, W, C) or (n_images, C, H, W)
        Images as float in [0, 1] or uint8 (scaled by 1/255); numpy or torch.
    reconstructions : array-like
        The same images reconstructed, in the same shape as ``originals``
        (layout and dtype may differ, e.g. uint8 originals and float reconstructions).

    Returns
    -------
    ndarray of shape (n_images, H, W), float32
        ``mean_c (original - reconstruction) ** 2`` for each pixel.
    """
    x = _as_nhwc(originals, "originals")
    r = _as_nhwc(reconstructions, "reconstructions")
    if x.shape != r.shape:
        raise ValueError(
            f"originals and reconstructions differ in shape (as N, H, W, C: {x.shape} vs "
            f"{r.shape}); pass one reconstruction per original, same size and channels"
        )
    return ((x - r) ** 2).mean(axis=-1).astype(np.float32)


def image_grid(
    rows: Sequence[Any],
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    cmap: str = "gray",
    row_cmaps: Sequence[str | None] | None = None,
    max_cols: int = 8,
    cell_size: float = 1.3,
) -> Figure:
    """Rows of images, e.g. originals above their reconstructions and error maps.

    Parameters
    ----------
    rows : sequence of array-like
        One batch per row, each of shape (n_images, H, W), (n_images, H, W, C)
        with C in {1, 3, 4}, or channels-first (n_images, C, H, W) with C in
        {1, 3} (torch style; channels-first wins when both readings fit). Images
        are float in [0, 1] or uint8; a row with its own entry in ``row_cmaps``
        is a scalar map instead (any non-negative range, e.g. from
        :func:`error_maps`) and must be single-channel. Each row shows its first
        ``max_cols`` images; shorter rows leave blank cells.
    row_titles : sequence of str, optional
        One label per row, written left of the row.
    col_titles : sequence of str, optional
        One title per column, written above the first row (at most ``max_cols``).
    cmap : str, default="gray"
        Colormap for single-channel image rows.
    row_cmaps : sequence of str or None, optional
        One entry per row; a string (e.g. ``"inferno"``) marks that row as a
        scalar map drawn with that colormap on a scale shared by the whole row,
        from ``min(0, row minimum)`` to the row maximum, so cells compare; None
        keeps the row an ordinary image row.
    max_cols : int, default=8
        Most images shown per row.
    cell_size : float, default=1.3
        Inches per image cell.

    Returns
    -------
    matplotlib.figure.Figure
        ``len(rows) * n_cols`` axes, row-major, ``n_cols = min(max_cols, longest row)``.
    """
    if isinstance(rows, np.ndarray) or hasattr(rows, "detach") or not isinstance(rows, Sequence):
        raise ValueError(
            "rows must be a list of image batches, one per row; wrap a single batch as [images]"
        )
    if len(rows) == 0:
        raise ValueError("rows is empty; pass at least one batch of images")
    if int(max_cols) < 1:
        raise ValueError(f"max_cols must be >= 1, got {max_cols}")
    if cell_size <= 0:
        raise ValueError(f"cell_size must be positive, got {cell_size}")
    n_rows = len(rows)
    for name, seq in (("row_titles", row_titles), ("row_cmaps", row_cmaps)):
        if seq is not None and len(seq) != n_rows:
            raise ValueError(f"{name} has {len(seq)} entries for {n_rows} rows; give one per row")
    cmaps = list(row_cmaps) if row_cmaps is not None else [None] * n_rows

    batches = []
    for i, row in enumerate(rows):
        a = _as_nhwc(row, f"row {i}")[: int(max_cols)]
        if cmaps[i] is None:
            lo, hi = float(a.min()), float(a.max())
            if lo < -1e-6 or hi > 1 + 1e-6:
                raise ValueError(
                    f"row {i}: float images must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
                    "rescale them, pass uint8, or give the row a colormap in row_cmaps "
                    "to draw it as a scalar map"
                )
        elif a.shape[-1] != 1:
            raise ValueError(
                f"row {i}: a row drawn with a colormap must have one channel, got "
                f"{a.shape[-1]}; average the channels first (see error_maps)"
            )
        batches.append(a)
    n_cols = max(b.shape[0] for b in batches)
    if col_titles is not None and len(col_titles) > n_cols:
        raise ValueError(f"col_titles has {len(col_titles)} entries for {n_cols} columns")

    fig = _new_figure((cell_size * n_cols + (0.4 if row_titles else 0.0), cell_size * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, (batch, row_cmap) in enumerate(zip(batches, cmaps, strict=True)):
        _draw_row(
            axes[i], batch, cmap if row_cmap is None else row_cmap, scalar=row_cmap is not None
        )
        if row_titles is not None:
            axes[i, 0].set_ylabel(str(row_titles[i]), fontsize=9)
    for j, title in enumerate(col_titles or []):
        axes[0, j].set_title(str(title), fontsize=9)
    return fig


def _draw_row(axes: Sequence[Axes], batch: np.ndarray, cmap: str, *, scalar: bool) -> None:
    """Draw (n, H, W, C) images into the first n axes; blank the rest."""
    if scalar:
        vmin, vmax = min(0.0, float(batch.min())), float(batch.max())
        if vmax <= vmin:  # a constant map (e.g. perfect reconstruction) still draws
            vmax = vmin + 1.0
    else:
        vmin, vmax = 0.0, 1.0
    for j, ax in enumerate(axes):
        # Ticks and spines off by hand rather than axis("off"), which would
        # also hide the row label set with set_ylabel.
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if j >= batch.shape[0]:
            continue
        img = batch[j]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        else:
            ax.imshow(np.clip(img, 0.0, 1.0), interpolation="nearest")
