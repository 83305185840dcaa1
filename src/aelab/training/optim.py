"""The optimizer and learning-rate schedule of the training loop.

AdamW with per-prefix learning-rate multipliers and weight decay on weight
matrices and kernels only; a linear warm-up then a cosine decay, stepped once
per optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

#: ``factory(epoch) -> iterable of batches`` (with ``len()``)
BatchFactory = Callable[[int], Iterable[Any]]


def warmup_cosine(warmup: int, total: int, min_ratio: float) -> Callable[[int], float]:
    """LR factor at optimizer step ``s``: linear warm-up, then cosine to ``min_ratio``."""

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        t = (s - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return factor


def make_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    lr_mult: Mapping[str, float],
    fused: bool,
) -> torch.optim.AdamW:
    """AdamW over ``model``'s parameters, grouped by learning-rate multiplier and decay.

    ``lr_mult`` maps a parameter-name prefix to a multiplier of ``lr`` (the
    first matching prefix wins); ``fused`` asks for the fused kernel.
    """
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        mult = next((m for pre, m in lr_mult.items() if name.startswith(pre)), 1.0)
        # Decay weight matrices and kernels only: decaying biases and norm
        # scales towards zero only hurts (as in nanoGPT's configure_optimizers).
        groups.setdefault((float(mult), p.ndim >= 2), []).append(p)
    param_groups = [
        {"params": ps, "lr": lr * mult, "weight_decay": weight_decay if decay else 0.0}
        for (mult, decay), ps in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1]))
    ]
    return torch.optim.AdamW(param_groups, lr=lr, fused=fused or None)


def steps_per_epoch(train_batches: BatchFactory) -> int:
    """Optimizer steps in an epoch: the length of ``train_batches(0)``.

    Raises
    ------
    ValueError
        When the batches have no ``len()`` or there are none.
    """
    batches = train_batches(0)
    try:
        n = len(batches)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(
            "train_batches(epoch) must return an iterable with len() "
            "(the schedule needs the number of steps)"
        ) from None
    if n < 1:
        raise ValueError(
            "train_batches(0) yields no batches; give more data or a smaller batch size"
        )
    return n
