"""What one epoch of the training loop is made of, apart from the loop itself.

Batches moved to the device, the precision context, the running sums of a
step function's metrics (all-reduced across processes), the error a
non-finite loss raises, the step function wrapped for DistributedDataParallel,
and the lines and logs an epoch leaves. :class:`~aelab.training.loop.Trainer`
calls these; nothing here knows about models.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from aelab.runtime import SpeedChoice
from aelab.training import distributed as dist_utils

#: ``step(model, batch, stage) -> {"loss": tensor, "n": int, <metric>: tensor, ...}``
StepFn = Callable[[nn.Module, Any, str], Mapping[str, Any]]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


def non_finite_error(
    stage: str, value: float, epoch: int, run_dir: Path | None
) -> NonFiniteLossError:
    """The error for a ``stage`` loss of ``value`` in 0-based ``epoch`` (``epoch`` epochs saved)."""
    kept = (
        f"the last good checkpoint (epoch {epoch}) is kept in {run_dir}"
        if run_dir is not None and epoch > 0
        else "no checkpoint was written"
    )
    return NonFiniteLossError(
        f"the {stage} loss became {value} in epoch {epoch + 1}; training stopped and "
        f"{kept}. Lower the learning rate, keep gradient clipping on, or turn off amp."
    )


def to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """``batch`` (a tensor, or tuples, lists and mappings of them) on ``device``.

    With ``channels_last``, 4-D floating-point tensors take that memory format.
    """
    if isinstance(batch, torch.Tensor):
        t = batch.to(device, non_blocking=True)
        if channels_last and t.ndim == 4 and t.is_floating_point():
            t = t.contiguous(memory_format=torch.channels_last)
        return t
    if isinstance(batch, tuple | list):
        return type(batch)(to_device(b, device, channels_last) for b in batch)
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


def autocast(
    device: torch.device, speed: SpeedChoice | None
) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast when ``speed`` chose it, else nothing."""
    if speed and speed.amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class EpochSums:
    """Running sums of a step function's outputs over an epoch, each batch weighted by ``"n"``.

    The sums stay on the device (reading one waits for it); :meth:`means`
    all-reduces them across processes and divides by the number of samples.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, out: Mapping[str, Any]) -> None:
        """Add one batch's step output (``"n"`` samples, 1 when absent)."""
        n = int(out.get("n", 1))
        self.count += n
        for k, v in out.items():
            if k == "n":
                continue
            if k not in self.sums:
                self.sums[k] = torch.zeros((), dtype=torch.float64, device=v.device)
            self.sums[k].add_(v.detach(), alpha=n)

    def means(self, stage: str, epoch: int) -> dict[str, float]:
        """Each metric's mean over the epoch's samples on every process (0-based ``epoch``)."""
        totals, count = dist_utils.all_reduce_sums(self.sums, self.count)
        if count == 0:
            raise ValueError(f"the {stage} batches of epoch {epoch + 1} are empty")
        metrics = {k: v / count for k, v in totals.items()}
        if "loss" not in metrics:
            raise ValueError("the step function must return a 'loss' entry")
        return metrics


class StepModule(nn.Module):
    """``step(model, batch, stage)`` as a module, so DDP sees one forward per step."""

    def __init__(self, model: nn.Module, step: StepFn) -> None:
        super().__init__()
        self.model = model
        self._step = step

    def forward(self, batch: Any, stage: str) -> dict[str, Any]:
        return dict(self._step(self.model, batch, stage))


def wrap_ddp(model: nn.Module, step: StepFn, device: torch.device) -> nn.Module:
    """The model and step function as one DistributedDataParallel module."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    # find_unused_parameters: a step may leave parts of the model out (the
    # decoder in plain fine-tuning, the head in pre-training, a frozen encoder).
    return DistributedDataParallel(
        StepModule(model, step), device_ids=ids, find_unused_parameters=True
    )


def open_tensorboard(run_dir: Path | None, enabled: bool) -> Any:
    """A TensorBoard ``SummaryWriter`` in ``run_dir/tensorboard``, or None.

    None when not ``enabled``, without a ``run_dir``, or (with a warning)
    without the tensorboard package.
    """
    if not enabled or run_dir is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "tensorboard=True but the tensorboard package is not installed; "
            "pip install tensorboard to get TensorBoard logs (metrics.csv is written anyway)",
            stacklevel=3,
        )
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def summary(row: Mapping[str, float], epochs: int) -> str:
    """One line for an epoch's row of metrics: ``epoch 2/8  lr ...  train_loss ...  (1.2 s)``."""
    parts = [f"epoch {int(row['epoch'])}/{epochs}"]
    parts += [f"{k} {v:.4g}" for k, v in row.items() if k not in ("epoch", "time_s")]
    parts.append(f"({row['time_s']:.1f} s)")
    return "  ".join(parts)
