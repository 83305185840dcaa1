"""Figure plumbing shared by every plot: creation, PNG bytes, data URIs, saving.

Every plot in :mod:`aelab.viz` builds a :class:`matplotlib.figure.Figure`
directly instead of going through ``pyplot``: such a figure belongs to no
global figure manager, so plotting is safe in threads, servers and notebooks
and never opens a window. Rendering goes through the Agg canvas that
matplotlib attaches on ``savefig``.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from aelab.files import atomic_path

__all__ = ["figure_to_data_uri", "figure_to_png_bytes", "save_figure"]


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A fresh pyplot-free figure whose layout keeps titles and legends inside."""
    return Figure(figsize=figsize, layout="constrained")


def _check_figure(fig: Any) -> Figure:
    if not isinstance(fig, Figure):
        raise ValueError(
            f"expected a matplotlib.figure.Figure, got {type(fig).__name__}; "
            "pass the figure an aelab.viz function returned"
        )
    return fig


def _check_dpi(dpi: float) -> float:
    if not np.isfinite(dpi) or dpi <= 0:
        raise ValueError(f"dpi must be a positive number, got {dpi}")
    return float(dpi)


def figure_to_png_bytes(fig: Figure, dpi: float = 100) -> bytes:
    """Render a figure to PNG bytes.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to render.
    dpi : float, default=100
        Dots per inch; the image is ``figsize * dpi`` pixels (no tight cropping,
        so the size is predictable).

    Returns
    -------
    bytes
        A complete PNG file.
    """
    fig = _check_figure(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_check_dpi(dpi))
    return buf.getvalue()


def figure_to_data_uri(fig: Figure, dpi: float = 100) -> str:
    """Render a figure as a ``data:image/png;base64,...`` URI for an HTML ``<img src>``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to render.
    dpi : float, default=100
        Dots per inch, as in :func:`figure_to_png_bytes`.

    Returns
    -------
    str
        The PNG, base64-encoded, behind a ``data:image/png;base64,`` prefix.
    """
    png = figure_to_png_bytes(fig, dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def save_figure(
    fig: Figure, path: str | os.PathLike[str], *, dpi: float = 150, close: bool = True
) -> Path:
    """Write a figure to ``path`` atomically; the format follows the file suffix.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to write.
    path : str or os.PathLike
        Destination, e.g. ``out/clusters.png``; the suffix (``.png``, ``.pdf``,
        ``.svg``, ...) chooses the format. Parent folders are created.
    dpi : float, default=150
        Dots per inch for raster formats.
    close : bool, default=True
        Release the figure afterwards (closed in pyplot if pyplot manages it,
        then cleared), so long loops that save many figures do not grow memory.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    fig = _check_figure(fig)
    path = Path(path)
    fmt = image_format(path)
    # The temporary file ends in .tmp, so the format is passed explicitly.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=_check_dpi(dpi))
    if close:
        _close(fig)
    return path


def image_format(path: str | os.PathLike[str]) -> str:
    """The image format a file name asks for (``"png"`` for ``x.png``), or a ValueError.

    Checking the name before any work lets a command refuse a bad ``--plot`` at once.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    name = Path(path).name
    fmt = Path(path).suffix.lstrip(".").lower()
    supported: Sequence[str] = sorted(FigureCanvasBase.get_supported_filetypes())
    if fmt not in supported:
        raise ValueError(
            f"cannot tell the image format from {name!r}; end the file name with "
            f"one of: {', '.join('.' + s for s in supported)}"
        )
    return fmt


def _close(fig: Figure) -> None:
    # A figure made by aelab has no manager; one made by pyplot must also leave
    # pyplot's registry or it is never freed.
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt

        plt.close(fig)
    fig.clear()
