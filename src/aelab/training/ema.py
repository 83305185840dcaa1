"""An exponential moving average (EMA) of a model's weights, updated after every step.

Predicting with an average of the recent weights rather than the last ones is
the "Mean Teacher" / Polyak averaging of Tarvainen & Valpola (2017), used by
FixMatch (Sohn et al., 2020) for its evaluation model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """A copy of ``model`` that holds the running average of its weights.

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained; the average starts as a copy of it (same
        device, eval mode, no gradients).
    decay : float
        Decay per step, in (0, 1). Early steps use
        ``min(decay, (1 + step) / (10 + step))`` so the average does not
        remember the initial weights in a short run.

    Attributes
    ----------
    module : torch.nn.Module
        The averaged model. Floating tensors (weights, batch-norm statistics)
        are averaged; the others (batch-norm step counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self._averaged: list[torch.Tensor] = []
        self._current: list[torch.Tensor] = []
        self._copied: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.pair(model)

    def pair(self, model: nn.Module) -> None:
        """Follow the tensors of ``model`` (again, after its modules were replaced).

        ``state_dict()`` tensors share storage with the modules, so the pairs
        stay valid while weights are copied in place (resume, ``load_state_dict``).
        """
        ours = model.state_dict()
        pairs = [(v, ours[k]) for k, v in self.module.state_dict().items()]
        floating = [p for p in pairs if p[0].is_floating_point()]
        self._averaged = [a for a, _ in floating]
        self._current = [b for _, b in floating]
        self._copied = [p for p in pairs if not p[0].is_floating_point()]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move the average towards the model's weights after optimizer step ``step`` (0-based)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self._averaged, self._current, 1.0 - decay)  # one fused call
        for a, b in self._copied:
            a.copy_(b)
