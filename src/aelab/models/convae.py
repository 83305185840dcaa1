"""The reference convolutional autoencoder of the study, with a classifier head.

Encoder: ``depth`` blocks of Conv2d(k4, s2, p1) + BatchNorm + ReLU halve the
image each time, then Flatten + Linear + BatchNorm1d + ReLU give the latent
``z``. The decoder mirrors it with ConvTranspose2d and ends in a Sigmoid, so
reconstructions live in [0, 1] like the inputs. The classifier head reads ``z``.
With the defaults this is exactly the table of STUDY.md (3x64x64, latent 1024,
about 23.4 M parameters).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

__all__ = ["ConvAEConfig", "ConvAutoencoder"]


@dataclass
class ConvAEConfig:
    """Shape of a :class:`ConvAutoencoder`.

    Parameters
    ----------
    in_channels : int
        Image channels (3 for RGB, 1 for grayscale).
    image_size : int
        Height and width of the (square) input; a power of two, at least
        ``2 ** len(widths)`` and at least 16.
    widths : tuple of int
        Channels after each stride-2 encoder block; the decoder mirrors them.
    latent_dim : int
        Size of the latent vector ``z``.
    num_classes : int
        Outputs of the classifier head.
    head_hidden : int
        Hidden width of the classifier head.
    dropout : float
        Dropout before the head's last layer (0 disables it).
    """

    in_channels: int = 3
    image_size: int = 64
    widths: tuple[int, ...] = field(default=(64, 128, 256, 512))
    latent_dim: int = 1024
    num_classes: int = 10
    head_hidden: int = 1024
    dropout: float = 0.0

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        s = self.image_size
        if s < 16 or s & (s - 1):
            raise ValueError(f"image_size must be a power of two >= 16, got {s}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"widths must be positive integers, got {self.widths}")
        if s >> len(self.widths) < 1:
            raise ValueError(
                f"{len(self.widths)} stride-2 blocks need image_size >= "
                f"{2 ** len(self.widths)}, got {s}"
            )
        if self.latent_dim < 1 or self.num_classes < 1 or self.head_hidden < 1:
            raise ValueError("latent_dim, num_classes and head_hidden must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def bottleneck_size(self) -> int:
        """Spatial size after the last encoder block."""
        return self.image_size >> len(self.widths)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvAEConfig:
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
        super().__init__()
        cfg = config or ConvAEConfig()
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
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        device = next(self.parameters()).device
        self.classifier = self._make_head(num_classes).to(device)
