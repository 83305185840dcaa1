"""The settings of the training loop and what a run returns.

The tasks' settings, which extend :class:`TrainConfig`, are in :mod:`aelab.training.configs`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aelab.runtime import SpeedChoice

__all__ = ["TrainConfig", "TrainResult"]


@dataclass
class TrainConfig:
    """Settings of the training loop (optimizer, schedule, stopping, precision).

    Parameters
    ----------
    epochs : int
        Passes over the training batches.
    lr : float
        Peak learning rate of AdamW (reached after the warm-up).
    weight_decay : float
        AdamW weight decay, applied to weight matrices and kernels only
        (not to biases and normalisation parameters).
    warmup_epochs : float
        Linear warm-up length in epochs (fractions allowed); then cosine decay.
    min_lr_ratio : float
        The cosine decays to ``lr * min_lr_ratio`` at the last step.
    grad_clip : float or None
        Clip the global gradient norm to this value; ``None`` disables it.
    amp : {"auto", "bf16", "none"} or None
        Mixed precision. ``"bf16"`` runs the step under ``torch.autocast``
        with bfloat16 (CPU and CUDA; losses stay float32); ``"none"`` (or
        ``None``) trains in float32. ``"auto"`` (the default) chooses bf16
        where the hardware computes in bfloat16 natively (x86 CPUs with
        ``avx512_bf16`` or ``amx_bf16``, CUDA GPUs from compute capability
        8.0) and the model has at least a million parameters, float32
        otherwise: without native support bf16 measured 20x slower, and on a
        tiny model the casts cost more than they save. The choice is printed
        and recorded in ``config.json`` (see :func:`aelab.runtime.resolve_speed`).
    patience : int or None
        Early stopping: stop after this many epochs without improvement of
        ``monitor``; ``None`` never stops early.
    monitor : str or None
        Metric that decides the best epoch and early stopping, e.g.
        ``"val_loss"`` or ``"val_acc"``; ``None`` means ``"val_loss"`` when
        there is validation data, else ``"train_loss"``.
    mode : {"min", "max"} or None
        Whether ``monitor`` should go down or up; ``None`` guesses ``"max"``
        for names containing ``"acc"`` and ``"min"`` otherwise.
    restore_best : bool
        At the end, load the weights of the best epoch into the model.
    seed : int
        Seeds Python, NumPy and torch at the start of a fresh run.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    channels_last : bool or "auto"
        Put the model and 4-D float inputs in channels-last memory format.
        ``"auto"`` (the default) turns it on where it was measured to pay: on
        the CPU, for a model of at least a million parameters trained in
        float32 (1.1-1.3x); with bf16 it measured no gain, so it stays off.
    fused_adamw : bool
        Use the fused AdamW kernel (fewer, larger operations per step).
    progress : bool
        Show tqdm progress bars and a one-line summary per epoch.
    log_every : int
        Steps between progress-bar loss updates (each one waits for the device).
    tensorboard : bool
        Also log to ``run_dir/tensorboard`` when the ``tensorboard`` package is
        importable (it is not a dependency of aelab).
    sync_batchnorm : bool
        With several processes (torchrun), normalise batch-norm layers with the
        statistics of the global batch rather than each rank's share. Ignored
        in a single process.
    ema_decay : float
        Keep an exponential moving average of the weights (and batch-norm
        statistics) with this decay per step, e.g. 0.999; 0 turns it off. The
        average is what validation sees, what the checkpoints hold and what
        the model holds after training; the raw weights keep training. Early
        steps use ``min(ema_decay, (1 + step) / (10 + step))`` so the average
        does not remember the initial weights in a short run.
    """

    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float | None = 1.0
    amp: str | None = "auto"
    patience: int | None = None
    monitor: str | None = None
    mode: str | None = None
    restore_best: bool = True
    seed: int = 0
    device: str = "auto"
    channels_last: bool | str = "auto"
    fused_adamw: bool = True
    progress: bool = True
    log_every: int = 25
    tensorboard: bool = False
    sync_batchnorm: bool = True
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.amp == "none":
            self.amp = None
        if self.amp not in (None, "auto", "bf16"):
            raise ValueError(f"amp must be 'auto', 'bf16' or 'none', got {self.amp!r}")
        if not (isinstance(self.channels_last, bool) or self.channels_last == "auto"):
            raise ValueError(
                f"channels_last must be true, false or 'auto', got {self.channels_last!r}"
            )
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None, got {self.patience}")
        if self.mode not in (None, "min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or None, got {self.mode!r}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 turns it off), got {self.ema_decay}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**d)


@dataclass
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    history : list of dict
        One row per epoch: ``epoch``, ``lr``, ``time_s``, ``train_<metric>``,
        ``val_<metric>`` (the rows of ``metrics.csv``).
    monitor : str
        The metric that chose the best epoch.
    best_metric : float or None
        Its best value.
    best_epoch : int or None
        The epoch (1-based) where it was reached.
    stopped_early : bool
        Whether early stopping ended the run.
    run_dir : Path or None
        Where checkpoints and metrics went.
    paths : dict of str to Path
        The files written (``model``, ``best``, ``metrics``, ...).
    speed : SpeedChoice or None
        The precision and memory format the run used (what ``amp="auto"`` and
        ``channels_last="auto"`` resolved to), as recorded in ``config.json``.
    """

    history: list[dict[str, float]]
    monitor: str
    best_metric: float | None
    best_epoch: int | None
    stopped_early: bool
    run_dir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    speed: SpeedChoice | None = None

    @property
    def epochs_run(self) -> int:
        return len(self.history)
