"""The reference convolutional autoencoder of the study, with a classifier head.

Encoder: ``depth`` blocks of Conv2d(k4, s2, p1) + BatchNorm + ReLU halve the
image each time, then Flatten + Linear + BatchNorm1d + ReLU give the latent
``z``. The decoder mirrors it with ConvTranspose2d and ends in a Sigmoid, so
reconstructions live in [0, 1] like the inputs. The classifier head reads ``z``.
With the defaults this is exactly the table of docs/study.md (3x64x64, latent 1024,
about 23.4 M parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from aelab.runtime import physical_memory

__all__ = ["LIMITS", "ConvAEConfig", "ConvAutoencoder"]


#: Upper bounds of the config fields, far above any model this family is meant
#: for; within them, :meth:`ConvAEConfig.check_memory` decides what fits.
LIMITS: dict[str, int] = {
    "image_size": 4096,
    "widths": 16384,
    "latent_dim": 1 << 20,
    "num_classes": 1 << 20,
    "head_hidden": 1 << 20,
}

#: Bytes per parameter when training with Adam: float32 weights, gradients and
#: the two moment estimates.
TRAIN_BYTES_PER_PARAM = 16


def _check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int in [low, high], else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return int(value)


@dataclass
class ConvAEConfig:
    """Shape of a :class:`ConvAutoencoder`.

    Every field is checked when the config is made (types, ranges and the
    bounds in :data:`LIMITS`), so a hand-edited ``model.json`` is refused with
    a message before anything is built; :meth:`check_memory` then refuses a
    model this machine cannot hold.

    Parameters
    ----------
    in_channels : {1, 3}
        Image channels (3 for RGB, 1 for grayscale).
    image_size : int
        Height and width of the (square) input, from 16 to 4096; divisible by
        ``2 ** len(widths)``, since every block halves it exactly (a power
        of two always is; 28 is, with two blocks).
    widths : tuple of int
        Channels after each stride-2 encoder block (each 1 to 16384); the
        decoder mirrors them.
    latent_dim : int
        Size of the latent vector ``z``.
    num_classes : int
        Outputs of the classifier head.
    head_hidden : int
        Hidden width of the classifier head.
    dropout : float
        Dropout before the head's last layer, in [0, 1) (0 disables it).
    """

    in_channels: int = 3
    image_size: int = 64
    widths: tuple[int, ...] = field(default=(64, 128, 256, 512))
    latent_dim: int = 1024
    num_classes: int = 10
    head_hidden: int = 1024
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.in_channels not in (1, 3) or isinstance(self.in_channels, bool | float):
            raise ValueError(
                f"in_channels must be 1 (grayscale) or 3 (RGB), got {self.in_channels!r}"
            )
        self.in_channels = int(self.in_channels)
        s = self.image_size = _check_int("image_size", self.image_size, 16, LIMITS["image_size"])
        if not isinstance(self.widths, list | tuple) or not self.widths:
            raise ValueError(f"widths must be a non-empty list of integers, got {self.widths!r}")
        self.widths = tuple(
            _check_int(f"widths[{i}]", w, 1, LIMITS["widths"]) for i, w in enumerate(self.widths)
        )
        halvings = 2 ** len(self.widths)
        if s < halvings:
            raise ValueError(
                f"{len(self.widths)} stride-2 blocks need image_size >= {halvings}, got {s}"
            )
        if s % halvings:
            raise ValueError(
                f"image_size must be divisible by {halvings} (each of the {len(self.widths)} "
                f"stride-2 blocks halves it exactly), got {s}; use a power of two, or fewer widths"
            )
        for name in ("latent_dim", "num_classes", "head_hidden"):
            setattr(self, name, _check_int(name, getattr(self, name), 1, LIMITS[name]))
        d = self.dropout
        if isinstance(d, bool) or not isinstance(d, int | float | np.floating):
            raise ValueError(f"dropout must be a number in [0, 1), got {d!r}")
        if not 0.0 <= d < 1.0:  # also refuses NaN
            raise ValueError(f"dropout must be in [0, 1), got {d}")
        self.dropout = float(d)

    @property
    def bottleneck_size(self) -> int:
        """Spatial size after the last encoder block."""
        return self.image_size // 2 ** len(self.widths)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of each part of the model, computed from the config alone.

        Returns
        -------
        dict
            ``"convolutions"`` (encoder and decoder blocks), ``"latent layers"``
            (the two Linear layers between the last block and ``z``, with their
            BatchNorm) and ``"head"``; their sum is the parameter count of
            :class:`ConvAutoencoder`.
        """
        w, c = self.widths, self.in_channels
        flat = w[-1] * self.bottleneck_size**2
        conv = 0
        for cin, cout in zip((c, *w), w, strict=False):  # Conv + bias + BN
            conv += cin * cout * 16 + 3 * cout
        rev = w[::-1]
        for cin, cout in zip(rev, rev[1:], strict=False):  # ConvTranspose + bias + BN
            conv += cin * cout * 16 + 3 * cout
        conv += rev[-1] * c * 16 + c  # the last ConvTranspose
        latent = (flat + 3) * self.latent_dim + (self.latent_dim + 3) * flat
        h = self.head_hidden
        head = (self.latent_dim + 3) * h + (h + 1) * self.num_classes
        return {"convolutions": conv, "latent layers": latent, "head": head}

    def activation_count(self) -> int:
        """Activations one image makes in a forward pass (the values backward keeps)."""
        acts, side = 0, self.image_size
        for width in self.widths:  # Conv + BN outputs (ReLU works in place)
            side //= 2
            acts += 2 * width * side * side
        flat = self.widths[-1] * self.bottleneck_size**2
        acts += 2 * self.latent_dim + 2 * flat + 2 * self.head_hidden + self.num_classes
        side = self.bottleneck_size
        for width in self.widths[-2::-1]:  # decoder blocks
            side *= 2
            acts += 2 * width * side * side
        return acts + 2 * self.in_channels * self.image_size**2

    def training_bytes(self, batch_size: int = 1) -> int:
        """Rough bytes to train the model with Adam on batches of ``batch_size``.

        16 bytes per parameter (weights, gradients, two Adam moments) plus the
        float32 activations of the batch and their gradients. A lower bound:
        framework workspace and the data come on top.
        """
        params = sum(self.parameter_counts().values())
        return TRAIN_BYTES_PER_PARAM * params + 8 * batch_size * self.activation_count()

    def check_memory(self, memory: int | None = None) -> None:
        """Refuse a model that cannot be trained in ``memory`` bytes, before building it.

        Parameters
        ----------
        memory : int, optional
            Bytes available; default this machine's physical memory (no check
            when that cannot be told).

        Raises
        ------
        ValueError
            One line naming the fields behind most of the size, the estimate
            and the limit.
        """
        if memory is None:
            memory = physical_memory()
            if memory is None:
                return
        need = self.training_bytes()
        if need <= memory:
            return
        parts = self.parameter_counts()
        biggest = max(parts, key=parts.__getitem__)
        fields = {
            "convolutions": f"widths={list(self.widths)}",
            "latent layers": (
                f"widths[-1]={self.widths[-1]}, image_size={self.image_size} "
                f"and latent_dim={self.latent_dim}"
            ),
            "head": (
                f"latent_dim={self.latent_dim}, head_hidden={self.head_hidden} "
                f"and num_classes={self.num_classes}"
            ),
        }[biggest]
        raise ValueError(
            f"model config too large: training it needs about {need / 1e9:.3g} GB "
            f"({sum(parts.values()) / 1e6:,.0f} M parameters, "
            f"most in the {biggest} set by {fields}), "
            f"more than the {memory / 1e9:.3g} GB of memory here; choose smaller values"
        )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConvAEConfig:
        """The config stored by :meth:`to_dict` (e.g. in ``model.json``), checked."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a ConvAEConfig must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ConvAEConfig fields: {sorted(unknown)}")
        return cls(**d)


def _down(cin: int, cout: int) -> nn.Sequential:
    """Conv2d(k4, s2, p1) + BN + ReLU: halves height and width."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 4, 2, 1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    """ConvTranspose2d(k4, s2, p1) + BN + ReLU: doubles height and width."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder with a classifier head on the latent.

    ``forward(x)`` returns ``(reconstruction, logits, z)`` for ``x`` of shape
    (B, in_channels, image_size, image_size) with values in [0, 1].

    Parameters
    ----------
    config : ConvAEConfig, optional
        The architecture; defaults to the study's reference model.
    """

    def __init__(self, config: ConvAEConfig | None = None) -> None:
        cfg = config or ConvAEConfig()
        # Before any layer exists: a config asking for hundreds of GB fails here, at once.
        cfg.check_memory()
        super().__init__()
        self.config = cfg
        w = cfg.widths
        s = cfg.bottleneck_size
        flat = w[-1] * s * s

        chans = (cfg.in_channels, *w)
        self.encoder = nn.Sequential(
            *[_down(chans[i], chans[i + 1]) for i in range(len(w))],
            nn.Flatten(),  # (B, w[-1], s, s) -> (B, w[-1]*s*s)
            nn.Linear(flat, cfg.latent_dim),
            nn.BatchNorm1d(cfg.latent_dim),
            nn.ReLU(inplace=True),
        )
        rev = w[::-1]
        self.decoder = nn.Sequential(
            nn.Linear(cfg.latent_dim, flat),
            nn.BatchNorm1d(flat),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (w[-1], s, s)),  # (B, w[-1]*s*s) -> (B, w[-1], s, s)
            *[_up(rev[i], rev[i + 1]) for i in range(len(rev) - 1)],
            nn.ConvTranspose2d(rev[-1], cfg.in_channels, 4, 2, 1),
            nn.Sigmoid(),
        )
        self.classifier = self._make_head(cfg.num_classes)
        self._init_weights()

    def _make_head(self, num_classes: int) -> nn.Sequential:
        cfg = self.config
        return nn.Sequential(
            nn.Linear(cfg.latent_dim, cfg.head_hidden),
            nn.BatchNorm1d(cfg.head_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.head_hidden, num_classes),
        )

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            if getattr(m, "bias", None) is not None and not isinstance(
                m, nn.BatchNorm1d | nn.BatchNorm2d
            ):
                nn.init.zeros_(m.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> latent (B, latent_dim)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, latent_dim) -> reconstruction (B, C, H, W) in [0, 1]."""
        return self.decoder(z)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, latent_dim) -> logits (B, num_classes)."""
        return self.classifier(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), self.classify(z), z

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one of ``num_classes`` outputs."""
        config = dataclasses.replace(self.config, num_classes=num_classes)  # validates it
        config.check_memory()
        self.config = config
        device = next(self.parameters()).device
        self.classifier = self._make_head(num_classes).to(device)
