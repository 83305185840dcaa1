"""Batch augmentation on tensors, in plain torch, on whatever device the batch is on.

One module, :class:`Augment`, does three things to a float batch (B, C, H, W)
in [0, 1], each image with its own random draw:

1. colour jitter, folded into one 3x3 matrix and offset per image (brightness,
   contrast; for RGB also saturation and hue, hue as a rotation in YIQ space,
   a linear stand-in for torchvision's HSV hue shift);
2. horizontal flip and random affine (rotation, translation, scale), folded
   into one 2x3 matrix per image and applied with one sampling grid and a
   single ``grid_sample`` (bilinear; outside pixels filled per ``padding``).

Randomness comes from torch's global generator for the batch's device, so
:func:`aelab.runtime.seed_everything` makes runs repeat. The module augments
in training mode (the default after construction) and is the identity after
``.eval()``; the training loop calls it on training batches only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aelab.data.transforms import LUMA_WEIGHTS

PADDING_MODES = ("zeros", "border", "reflection")

#: Parameters of each preset; any of them can be overridden by keyword.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {
        "hflip": 0.0,
        "brightness": 0.0,
        "contrast": 0.0,
        "saturation": 0.0,
        "hue": 0.0,
        "degrees": 0.0,
        "translate": 0.0,
        "scale": (1.0, 1.0),
        "padding": "zeros",
    },
    "standard": {
        "hflip": 0.5,
        "brightness": 0.2,
        "contrast": 0.2,
        "saturation": 0.2,
        "hue": 0.05,
        "degrees": 10.0,
        "translate": 0.1,
        "scale": (0.9, 1.1),
        "padding": "zeros",
    },
    # FixMatch's weak view: flip and a shift of up to 12.5 %, nothing else.
    "weak": {
        "hflip": 0.5,
        "brightness": 0.0,
        "contrast": 0.0,
        "saturation": 0.0,
        "hue": 0.0,
        "degrees": 0.0,
        "translate": 0.125,
        "scale": (1.0, 1.0),
        "padding": "zeros",
    },
}

# RGB -> YIQ (NTSC); Y is luminance, (I, Q) the chroma plane a hue shift rotates.
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


class Augment(nn.Module):
    """Random flip, colour jitter and affine warp of a batch (see the module docstring).

    Parameters
    ----------
    hflip : float in [0, 1]
        Probability of a horizontal flip.
    brightness, contrast, saturation : float >= 0
        Factors drawn uniformly from ``[1 - v, 1 + v]``; saturation applies to RGB only.
    hue : float in [0, 0.5]
        Hue shift drawn from ``[-v, v]`` of a full turn; RGB only.
    degrees : float >= 0
        Rotation drawn from ``[-degrees, degrees]``.
    translate : float or (float, float) in [0, 1]
        Largest shift as a fraction of width (and height).
    scale : (float, float)
        Zoom factor range, ``0 < low <= high``.
    padding : {"zeros", "border", "reflection"}
        Fill for pixels the warp brings in from outside the image.
    """

    def __init__(
        self,
        *,
        hflip: float,
        brightness: float,
        contrast: float,
        saturation: float,
        hue: float,
        degrees: float,
        translate: float | tuple[float, float],
        scale: tuple[float, float],
        padding: str,
    ) -> None:
        super().__init__()
        self.hflip = float(hflip)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.hue = float(hue)
        self.degrees = float(degrees)
        tr = (translate, translate) if isinstance(translate, int | float) else tuple(translate)
        self.translate = (float(tr[0]), float(tr[1]))
        self.scale = (float(scale[0]), float(scale[1]))
        self.padding = padding
        # Plain tensors, not buffers: they move to the batch's device in forward,
        # so the module works on any device without .to().
        yiq = torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)
        self._yiq = yiq.float()
        self._yiq_inv = torch.linalg.inv(yiq).float()
        self._luma = torch.tensor(LUMA_WEIGHTS)
        self._grids: dict[tuple[Any, ...], torch.Tensor] = {}

    @property
    def params(self) -> dict[str, Any]:
        """The parameters, JSON-ready, for run records."""
        return {
            "hflip": self.hflip,
            "brightness": self.brightness,
            "contrast": self.contrast,
            "saturation": self.saturation,
            "hue": self.hue,
            "degrees": self.degrees,
            "translate": list(self.translate),
            "scale": list(self.scale),
            "padding": self.padding,
        }

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params.items())

    @property
    def _has_colour(self) -> bool:
        return any((self.brightness, self.contrast, self.saturation, self.hue))

    @property
    def _has_affine(self) -> bool:
        return bool(self.degrees or any(self.translate) or self.scale != (1.0, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment ``x`` of shape (B, C, H, W), float in [0, 1]; same shape and dtype out."""
        if x.ndim != 4 or not x.is_floating_point():
            raise ValueError(
                f"augment expects a float batch (B, C, H, W) in [0, 1], got {x.dtype} of shape "
                f"{tuple(x.shape)}; convert uint8 images with aelab.data.to_float"
            )
        if not self.training or x.shape[0] == 0:
            return x
        b = x.shape[0]
        # One draw of fixed size per batch, whatever is enabled, so the random
        # stream (and so a seeded run) does not depend on which options are on.
        u = torch.rand(b, 9, device=x.device, dtype=torch.float32)
        flip = u[:, 0] < self.hflip
        if self._has_colour:
            x = self._colour(x, u[:, 1:5])
        if self._has_affine:
            x = self._affine(x, u[:, 5:9], flip)
        elif self.hflip > 0:
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        return x

    def _colour(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast (and saturation, hue for RGB) as one affine map per image.

        Without intermediate clipping the four steps compose exactly:
        x -> c*b * H @ S @ x + (1 - c) * b * mean_gray(x), since the hue map H
        and saturation map S both leave gray (1, 1, 1) unchanged.
        """
        b, c = x.shape[:2]
        bright = 1 + self.brightness * (2 * u[:, 0] - 1)  # (B,)
        contr = 1 + self.contrast * (2 * u[:, 1] - 1)
        xf = x.float()
        dev = x.device
        luma = self._luma.to(dev)
        if c == 3:
            mean_gray = xf.mean(dim=(2, 3)) @ luma  # (B, 3) -> (B,)
        else:
            mean_gray = xf.mean(dim=(1, 2, 3))
        offset = (1 - contr) * bright * mean_gray  # (B,)
        gain = contr * bright  # (B,)
        if c != 3 or not (self.saturation or self.hue):
            out = torch.addcmul(offset.view(b, 1, 1, 1), xf, gain.view(b, 1, 1, 1))
            return out.clamp_(0, 1).to(x.dtype)
        sat = 1 + self.saturation * (2 * u[:, 2] - 1)
        eye = torch.eye(3, device=dev)
        # S = s*I + (1 - s) * 1 w^T blends each pixel with its luminance.
        s_mat = sat.view(b, 1, 1) * eye + (1 - sat).view(b, 1, 1) * luma.view(1, 1, 3)
        angle = self.hue * (2 * u[:, 3] - 1) * 2 * math.pi
        cos, sin = torch.cos(angle), torch.sin(angle)
        rot = torch.zeros(b, 3, 3, device=dev)
        rot[:, 0, 0] = 1
        rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
        rot[:, 2, 1], rot[:, 2, 2] = sin, cos
        h_mat = self._yiq_inv.to(dev) @ rot @ self._yiq.to(dev)  # (B, 3, 3)
        m = gain.view(b, 1, 1) * (h_mat @ s_mat)
        h, w = x.shape[-2:]
        out = torch.baddbmm(offset.view(b, 1, 1), m, xf.reshape(b, 3, h * w)).view(b, 3, h, w)
        return out.clamp_(0, 1).to(x.dtype)

    def _base_grid(self, h: int, w: int, x: torch.Tensor) -> torch.Tensor:
        """Pixel centres as (x, y, 1) in [-1, 1] coordinates, shape (1, h*w, 3), cached."""
        key = (h, w, x.device, x.dtype)
        grid = self._grids.get(key)
        if grid is None:
            ys = (2 * torch.arange(h, device=x.device, dtype=x.dtype) + 1) / h - 1
            xs = (2 * torch.arange(w, device=x.device, dtype=x.dtype) + 1) / w - 1
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            grid = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, h * w, 3)
            self._grids = {key: grid}  # keep only the latest size
        return grid

    def _affine(self, x: torch.Tensor, u: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """Flip, rotate, scale and shift each image with one sampling pass."""
        b, _, h, w = x.shape
        angle = math.radians(self.degrees) * (2 * u[:, 0] - 1)
        lo, hi = self.scale
        zoom = lo + (hi - lo) * u[:, 1]
        # Shifts in normalised coordinates ([-1, 1] spans the image, so 2x the fraction).
        tx = 2 * self.translate[0] * (2 * u[:, 2] - 1)
        ty = 2 * self.translate[1] * (2 * u[:, 3] - 1)
        cos, sin = torch.cos(angle), torch.sin(angle)
        # affine_grid maps output to input coordinates, so build the inverse warp:
        # p_in = A (p_out - t), A = D^-1 R(-angle) D / zoom, D = diag(w/2, h/2)
        # keeping rotation a true rotation on non-square images.
        a = torch.empty(b, 2, 2, device=x.device)
        a[:, 0, 0] = cos / zoom
        a[:, 0, 1] = sin * (h / w) / zoom
        a[:, 1, 0] = -sin * (w / h) / zoom
        a[:, 1, 1] = cos / zoom
        # A horizontal flip of the output is p_out -> (-x, y): negate A's first column.
        a[:, :, 0] *= torch.where(flip, -1.0, 1.0).unsqueeze(1)
        t = torch.stack([tx, ty], dim=1).unsqueeze(2)  # (B, 2, 1)
        theta = torch.cat([a, -(a @ t)], dim=2).to(x.dtype)  # (B, 2, 3)
        # Same grid as F.affine_grid(theta, x.shape, align_corners=False), several
        # times faster on CPU: (1, H*W, 3) @ (B, 3, 2) -> (B, H*W, 2) -> (B, H, W, 2).
        grid = torch.matmul(self._base_grid(h, w, x), theta.transpose(1, 2)).view(b, h, w, 2)
        return F.grid_sample(
            x, grid, mode="bilinear", padding_mode=self.padding, align_corners=False
        )


def _check(name: str, value: Any) -> None:
    """Validate one parameter, with a message naming it and the allowed range."""

    def nonneg(v: Any) -> bool:
        return (
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
        )

    if name == "hflip":
        ok, need = nonneg(value) and value <= 1, "a probability in [0, 1]"
    elif name in ("brightness", "contrast", "saturation"):
        ok, need = nonneg(value) and value <= 1, "in [0, 1]"
    elif name == "hue":
        ok, need = nonneg(value) and value <= 0.5, "in [0, 0.5]"
    elif name == "degrees":
        ok, need = nonneg(value) and value <= 180, "in [0, 180]"
    elif name == "translate":
        vals = [value] if isinstance(value, int | float) else list(value)
        ok = len(vals) in (1, 2) and all(nonneg(v) and v <= 1 for v in vals)
        need = "a fraction in [0, 1] or a pair (x, y) of them"
    elif name == "scale":
        try:
            lo, hi = (float(v) for v in value)
            ok = 0 < lo <= hi and math.isfinite(hi)
        except (TypeError, ValueError):
            ok = False
        need = "a pair (low, high) with 0 < low <= high"
    else:  # padding
        ok, need = value in PADDING_MODES, f"one of {', '.join(PADDING_MODES)}"
    if not ok:
        raise ValueError(f"augment option {name}={value!r} is invalid; it must be {need}")


def make_augment(preset: str = "standard", **overrides: Any) -> Augment:
    """Build the augmentation module for ``preset`` with keyword overrides.

    Parameters
    ----------
    preset : {"none", "weak", "standard"}
        ``"none"``: identity (images are only resized, at load time).
        ``"weak"``: hflip 0.5 and a shift of up to 12.5 % (FixMatch's weak view).
        ``"standard"``: hflip 0.5; brightness, contrast, saturation 0.2; hue
        0.05; rotation up to 10 degrees, shift up to 10 %, zoom 0.9-1.1.
    **overrides
        Any parameter of :class:`Augment`, e.g. ``hflip=0.0, degrees=15``.

    Returns
    -------
    Augment
        A module mapping float (B, C, H, W) in [0, 1] to the same shape and
        dtype, on the batch's device; random in training mode, identity after
        ``.eval()``.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; use one of {', '.join(PRESETS)}")
    allowed = PRESETS[preset].keys()
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown augmentation option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"
        )
    params = {**PRESETS[preset], **overrides}
    for name, value in params.items():
        _check(name, value)
    return Augment(**params)
