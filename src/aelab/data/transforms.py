"""Make images the model's size and channel count: resize, pad, convert channels.

Three ways to reach a target size, chosen with ``fit``:

``"resize"`` (the default)
    Stretch to exactly (height, width) with antialiased bilinear interpolation.
    For square sources and square models (the usual case) this keeps the aspect
    ratio; otherwise it distorts it.
``"letterbox"``
    Scale so the whole image fits inside the target keeping its aspect ratio,
    then pad the short side with black, centred.
``"pad"``
    No scaling: pad with black (centred) where the image is smaller and crop the
    centre where it is larger. The classical way to bring 28x28 MNIST-style
    digits to 32x32 without blurring them.

Channel conversion: RGB to grayscale uses ITU-R 601 luminance
(0.299 R + 0.587 G + 0.114 B, what Pillow's ``convert("L")`` does); grayscale
to RGB repeats the channel; an alpha channel (2 or 4 channels) is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from aelab.data.dataset import ImageDataset
from aelab.runtime import physical_memory

FIT_MODES = ("resize", "letterbox", "pad")

#: ITU-R 601 luminance weights, as Pillow uses for RGB -> L.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Rows converted at a time by ``conform``; bounds the float working memory
# (1024 x 3 x 64 x 64 float32 is 50 MB).
_CHUNK = 1024


def parse_image_size(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """Turn ``64`` or ``(64, 48)`` (height, width) into a (height, width) pair.

    Raises
    ------
    ValueError
        When the size is not one or two positive integers.
    """
    if image_size is None:
        return None
    if isinstance(image_size, int | np.integer) and not isinstance(image_size, bool):
        size = (int(image_size), int(image_size))
    else:
        try:
            vals = [int(v) for v in image_size]  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(
                f"image_size must be an int or (height, width), got {image_size!r}"
            ) from None
        if len(vals) != 2:
            raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
        size = (vals[0], vals[1])
    if min(size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return size


def _check_fits(shape: tuple[int, int, int, int], source: object) -> None:
    """Refuse a uint8 image tensor of ``shape`` larger than this machine's memory.

    Checked before allocating, so a huge ``image_size`` is a message, not an
    out-of-memory crash halfway through reading.
    """
    need = math.prod(shape)
    memory = physical_memory()
    if memory is not None and need > memory:
        n, c, h, w = shape
        raise ValueError(
            f"{source}: {n} images of {c}x{h}x{w} need {need / 1e9:.3g} GB, more than the "
            f"{memory / 1e9:.3g} GB of memory here; choose a smaller image_size"
        )


def check_channels(channels: int | None) -> int | None:
    """Validate a target channel count (1 or 3, or None for 'keep')."""
    if channels is None:
        return None
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    return int(channels)


def check_fit(fit: str) -> str:
    """Validate a fit mode name."""
    if fit not in FIT_MODES:
        raise ValueError(f"unknown fit {fit!r}; use one of {', '.join(FIT_MODES)}")
    return fit


def _fit_geometry(h: int, w: int, th: int, tw: int, fit: str) -> tuple[int, int]:
    """The size (height, width) to scale an h x w image to before padding/cropping."""
    if fit == "resize":
        return th, tw
    if fit == "letterbox":
        s = min(th / h, tw / w)
        return max(1, min(th, round(h * s))), max(1, min(tw, round(w * s)))
    return h, w  # "pad": no scaling


def _pad_or_crop(x: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """Centre ``x`` (..., h, w) in a black th x tw canvas, cropping what overflows."""
    h, w = x.shape[-2:]
    if (h, w) == (th, tw):
        return x
    top, left = (th - h) // 2, (tw - w) // 2
    # Crop first (negative offsets), then pad (positive offsets).
    y0, x0 = max(0, -top), max(0, -left)
    x = x[..., y0 : y0 + min(h, th), x0 : x0 + min(w, tw)]
    pt, pl = max(0, top), max(0, left)
    pb, pr = th - x.shape[-2] - pt, tw - x.shape[-1] - pl
    if pt or pl or pb or pr:
        x = F.pad(x, (pl, pr, pt, pb), value=0)
    return x


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, C, H, W) float in [0, 255] with C in {1, 2, 3, 4} -> (B, channels, H, W)."""
    c = x.shape[1]
    if c in (2, 4):  # drop alpha
        x = x[:, : c - 1]
        c -= 1
    if c == channels:
        return x
    if channels == 1:  # c == 3
        w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    return x.expand(-1, 3, -1, -1)  # c == 1


def _conform_uint8(
    x: torch.Tensor, size: tuple[int, int] | None, channels: int | None, fit: str
) -> torch.Tensor:
    """Conform a uint8 batch (B, C, H, W); returns a new uint8 tensor (B, C', H', W')."""
    h, w = x.shape[-2:]
    c = x.shape[1]
    target_c = channels if channels is not None else (c - 1 if c in (2, 4) else c)
    th, tw = size if size is not None else (h, w)
    nh, nw = _fit_geometry(h, w, th, tw, fit)
    if c == target_c and (nh, nw) == (h, w) and (th, tw) == (h, w):
        return x
    xf = x.float()
    # Resize the fewer channels: gray -> RGB after resizing, RGB -> gray before.
    expand = target_c > c - (1 if c in (2, 4) else 0)
    if not expand:
        xf = _convert_channels(xf, target_c)
    if (nh, nw) != (h, w):
        xf = F.interpolate(xf, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    if expand:
        xf = _convert_channels(xf, target_c)
    xf = _pad_or_crop(xf, th, tw)
    return xf.round().clamp_(0, 255).to(torch.uint8)


def conform(
    ds: ImageDataset,
    *,
    image_size: int | Sequence[int] | None,
    channels: int | None,
    fit: str = "resize",
) -> ImageDataset:
    """Bring every image of ``ds`` to ``image_size`` and ``channels``.

    Parameters
    ----------
    ds : ImageDataset
        Images of shape (n_samples, C, H, W), uint8.
    image_size : int or (height, width) or None
        Target size; ``None`` keeps the current size.
    channels : {1, 3} or None
        Target channel count; ``None`` keeps it.
    fit : {"resize", "letterbox", "pad"}
        How to reach the size (see the module docstring). Default ``"resize"``.

    Returns
    -------
    ImageDataset
        ``ds`` itself when nothing changes, else a new dataset with images of
        shape (n_samples, channels, height, width) and the same labels, ids and
        class names. Works in chunks, so a memory-mapped ``ds`` is read piecewise.
    """
    size = parse_image_size(image_size)
    channels = check_channels(channels)
    check_fit(fit)
    n, c, h, w = ds.images.shape
    target_c = channels if channels is not None else (c - 1 if c in (2, 4) else c)
    th, tw = size if size is not None else (h, w)
    if (th, tw) == (h, w) and target_c == c:
        return ds
    _check_fits((n, target_c, th, tw), "conform")
    out = torch.empty((n, target_c, th, tw), dtype=torch.uint8)
    for i in range(0, n, _CHUNK):
        out[i : i + _CHUNK] = _conform_uint8(ds.images[i : i + _CHUNK], size, channels, fit)
    return ImageDataset(images=out, labels=ds.labels, ids=ds.ids, class_names=ds.class_names)
