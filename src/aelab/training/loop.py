"""A model-agnostic training loop (in the spirit of minGPT's trainer).

Nothing here knows about autoencoders: the loop calls a *step function*
``step(model, batch, stage) -> dict`` for every batch, where ``stage`` is
``"train"`` or ``"val"``, and fires named callbacks. The dict must hold a
scalar ``"loss"`` tensor; every other scalar entry is a metric averaged over the
epoch, weighted by the optional ``"n"`` entry (samples in the batch), so an
accuracy returned per batch averages exactly to the epoch accuracy.

Batches come from *factories*: ``train_batches(epoch)`` returns an iterable
with ``len()`` for that epoch, so each epoch can reshuffle deterministically
from ``(seed, epoch)`` and a resumed run sees the same batches as an
uninterrupted one.

Under ``torchrun`` (``WORLD_SIZE > 1``) the same code trains data-parallel:
the trainer joins the process group, wraps the step in
``DistributedDataParallel``, all-reduces the epoch metrics and writes files on
rank 0 only; the factories must then yield this rank's share of each global
batch (see :mod:`aelab.training.distributed`; the recipes do).

With a ``run_dir`` every epoch ends with a checkpoint written as one unit
(:mod:`aelab.training.checkpoint`), so a run killed at any moment can be
resumed from its last complete epoch: make the :class:`Trainer` again with the
same ``run_dir`` and settings, and call ``fit(resume=True)``.
"""

from __future__ import annotations

import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from aelab.fingerprint import Fingerprint
from aelab.runtime import SpeedChoice, progress_bars, resolve_device, seed_everything
from aelab.training import checkpoint as ckpt
from aelab.training import distributed as dist_utils
from aelab.training import runfolder
from aelab.training import speed as speed_utils
from aelab.training.ema import WeightAverage
from aelab.training.epoch import (
    EpochSums,
    NonFiniteLossError,
    StepFn,
    autocast,
    non_finite_error,
    open_tensorboard,
    summary,
    to_device,
    wrap_ddp,
)
from aelab.training.loop_config import TrainConfig, TrainResult
from aelab.training.optim import BatchFactory, make_optimizer, steps_per_epoch, warmup_cosine

__all__ = ["NonFiniteLossError", "StepFn", "TrainConfig", "TrainResult", "Trainer"]

_EVENTS = ("on_fit_start", "on_train_epoch_start", "on_epoch_end", "on_fit_end")


class Trainer:
    """Run a step function over batches with AdamW, warm-up + cosine, checkpoints.

    Parameters
    ----------
    model : torch.nn.Module
        Trained in place (moved to ``config.device``).
    step : callable
        ``step(model, batch, stage) -> dict`` with a scalar ``"loss"`` tensor,
        optionally ``"n"`` (samples in the batch, the weight of this batch's
        metrics) and other scalar metric tensors.
    train_batches : callable
        ``train_batches(epoch)`` returns the training batches of that epoch (an
        iterable with ``len()``); tensors in them are moved to the device.
    config : TrainConfig
    val_batches : callable, optional
        ``val_batches(epoch)`` for validation after every epoch.
    run_dir : str or Path, optional
        Folder for the checkpoint, ``metrics.csv`` and ``config.json``, written
        together as one unit at the end of every epoch (nothing before the
        first epoch ends); ``None`` keeps everything in memory. A run killed at
        any moment resumes from its last complete epoch with ``fit(resume=True)``
        on a Trainer made with the same arguments.
    model_name : str, optional
        Registry name written to ``model.json`` (needed with ``run_dir``).
    model_meta : mapping, optional
        Extra entries for ``model.json`` (class names, image shape, task...).
    lr_mult : mapping of str to float, optional
        Learning-rate multipliers by parameter-name prefix, e.g.
        ``{"encoder.": 0.1}``; the first matching prefix wins.
    run_config : mapping, optional
        Extra JSON-able settings recorded in ``config.json`` next to ``config``
        (batch size, loss...).
    data_digests, inputs : mapping of str to str, optional
        Digests of the images the run learns from and of the results it starts
        from (``{"--init checkpoint": ...}``), by name: parts of its fingerprint.

    Notes
    -----
    Callbacks are plain functions ``fn(trainer)`` registered with
    :meth:`add_callback` under ``"on_fit_start"``, ``"on_train_epoch_start"``
    (after ``model.train()``, so a callback may freeze or put modules in eval
    mode), ``"on_epoch_end"`` (``trainer.history[-1]`` holds the metrics; set
    ``trainer.should_stop = True`` to stop) and ``"on_fit_end"``.

    With ``config.ema_decay`` > 0, ``trainer.ema`` is a copy of the model
    holding the running average of its weights: validation runs on it, the
    checkpoints' model files hold it (the raw weights go to
    ``train_weights.safetensors`` for ``resume``), and the model is given its
    weights at the end.

    ``trainer.speed`` is what ``config.amp`` and ``config.channels_last``
    resolved to, recorded in ``config.json`` (a resumed run keeps it).
    ``config.json`` also records its :meth:`fingerprint`; a run resumes only from the same.
    """

    def __init__(
        self,
        model: nn.Module,
        step: StepFn,
        train_batches: BatchFactory,
        *,
        config: TrainConfig,
        val_batches: BatchFactory | None = None,
        run_dir: str | Path | None = None,
        model_name: str | None = None,
        model_meta: Mapping[str, Any] | None = None,
        lr_mult: Mapping[str, float] | None = None,
        run_config: Mapping[str, Any] | None = None,
        data_digests: Mapping[str, str | None] | None = None,
        inputs: Mapping[str, str | None] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
        if run_dir is not None and not model_name:
            raise ValueError(
                "a run_dir needs model_name, the registry name that rebuilds the model"
            )
        self.model = model
        self.step = step
        self.train_batches = train_batches
        self.val_batches = val_batches
        self.config = config
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.model_name = model_name
        self.model_meta = dict(model_meta or {})
        self.lr_mult = dict(lr_mult or {})
        self.run_config = dict(run_config or {})
        self.data_digests, self.inputs = dict(data_digests or {}), dict(inputs or {})
        self.callbacks: dict[str, list[Callable[[Trainer], None]]] = defaultdict(list)
        # Filled in by fit():
        self.device = torch.device("cpu")
        self.speed: SpeedChoice | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, float]] = []
        self.should_stop = False
        # Set by fit() when several processes train together.
        self._ddp: nn.Module | None = None
        # The weight average (a copy of the model) when config.ema_decay > 0.
        self.ema: nn.Module | None = None
        self._average: WeightAverage | None = None
        # Early stopping ("best", "best_epoch", "bad_epochs"), the weights kept
        # for restore_best, whether the run stopped early, and whether the next
        # save starts a new run in run_dir: set by fit().
        self._es: dict[str, Any] = {}
        self._best_state: dict[str, torch.Tensor] | None = None
        self._stopped = False
        self._new_run = False

    # ------------------------------------------------------------------ callbacks

    def add_callback(self, event: str, fn: Callable[[Trainer], None]) -> None:
        """Call ``fn(trainer)`` on ``event`` (one of ``on_fit_start``, ``on_train_epoch_start``,
        ``on_epoch_end``, ``on_fit_end``)."""
        if event not in _EVENTS:
            raise ValueError(f"unknown callback event {event!r}; use one of {', '.join(_EVENTS)}")
        self.callbacks[event].append(fn)

    def _fire(self, event: str) -> None:
        for fn in self.callbacks.get(event, ()):
            fn(self)

    # ------------------------------------------------------------------ set-up

    def _monitor(self) -> tuple[str, str]:
        cfg = self.config
        monitor = cfg.monitor or ("val_loss" if self.val_batches is not None else "train_loss")
        if monitor.startswith("val_") and self.val_batches is None:
            raise ValueError(
                f"monitor {monitor!r} needs validation data; give validation batches "
                f"or monitor a training metric such as 'train_loss'"
            )
        mode = cfg.mode or ("max" if "acc" in monitor else "min")
        return monitor, mode

    def fingerprint(self) -> Fingerprint:
        """What this run is made from (see :func:`~aelab.training.runfolder.run_fingerprint`)."""
        return runfolder.run_fingerprint(
            self.config, self.run_config, self.data_digests, self.inputs
        )

    def _run_config(self) -> dict[str, Any]:
        speed = {"speed": self.speed.to_dict()} if self.speed else {}
        made_from = {"fingerprint": self.fingerprint().to_json()}
        return {"config": self.config.to_dict(), **self.run_config, **speed, **made_from}

    # ------------------------------------------------------------------ the loop

    def _run_epoch(
        self, batches: Iterable[Any], stage: str, model: nn.Module | None = None
    ) -> dict[str, float]:
        cfg = self.config
        train = stage == "train"
        model = self.model if model is None else model
        sums = EpochSums()
        desc = f"epoch {self.epoch + 1}/{cfg.epochs} {stage}"
        show = cfg.progress and dist_utils.is_main()
        bar = tqdm(
            batches, desc=desc, leave=False, disable=not progress_bars(show), dynamic_ncols=True
        )
        params = [p for p in self.model.parameters()]
        channels_last = bool(self.speed and self.speed.channels_last)
        for i, raw in enumerate(bar):
            batch = to_device(raw, self.device, channels_last)
            with autocast(self.device, self.speed):
                if train and self._ddp is not None:
                    # Through DDP's forward, so that backward averages the gradients.
                    out = self._ddp(batch, stage)
                else:
                    out = self.step(model, batch, stage)
            loss = out["loss"]
            if train:
                self._optimizer_step(loss, params)
            sums.add(out)
            # Reading the loss waits for the device, so only every log_every steps.
            if show and i % cfg.log_every == 0:
                value = float(loss.detach())
                bar.set_postfix(loss=f"{value:.4g}")
                if not math.isfinite(value):
                    raise non_finite_error(stage, value, self.epoch, self.run_dir)
        bar.close()
        metrics = sums.means(stage, self.epoch)
        if not math.isfinite(metrics["loss"]):
            raise non_finite_error(stage, metrics["loss"], self.epoch, self.run_dir)
        return metrics

    def _optimizer_step(self, loss: torch.Tensor, params: list[nn.Parameter]) -> None:
        """Backward, clip, step the optimizer, the schedule and the weight average."""
        assert self.optimizer is not None and self.scheduler is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self._average is not None:
            self._average.update(self.global_step)
        self.global_step += 1

    # ------------------------------------------------------------------ fit

    def fit(self, *, resume: bool = False, overwrite: bool = False) -> TrainResult:
        """Train for ``config.epochs`` epochs (or until early stopping).

        Parameters
        ----------
        resume : bool
            Continue the run saved in ``run_dir`` from its last complete epoch:
            weights, optimizer, scheduler, RNG states and history are restored,
            so the run ends with the same weights as one that was never
            interrupted. With nothing to resume in ``run_dir`` (the run was
            stopped before its first epoch ended) it warns and starts afresh.
        overwrite : bool
            Start afresh even if ``run_dir`` already holds a run. The old run's
            files are replaced when the new run's first epoch is saved, so
            until then the old run stays whole.

        Returns
        -------
        TrainResult

        Raises
        ------
        NonFiniteLossError
            When the loss becomes NaN or infinite (the last checkpoint is kept).
        """
        cfg = self.config
        monitor, mode = self._monitor()
        world = dist_utils.init_from_env(cfg.device)
        self._set_up(world)
        start = self._begin(resume, overwrite)
        speed_utils.announce(self.speed, cfg.progress and dist_utils.is_main())
        self._ddp = wrap_ddp(self.model, self.step, self.device) if world.world_size > 1 else None
        writer = open_tensorboard(self.run_dir, cfg.tensorboard) if dist_utils.is_main() else None
        self.should_stop = self._stopped
        self._fire("on_fit_start")
        try:
            for epoch in range(start, cfg.epochs):
                if self.should_stop:
                    break
                row = self._train_epoch(epoch, world)
                self._end_epoch(row, monitor, mode)
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch + 1)
                if cfg.progress and dist_utils.is_main():
                    tqdm.write(summary(row, cfg.epochs), file=sys.stderr)
        finally:
            if writer is not None:
                writer.close()
            self._ddp = None
            if world.world_size > 1 and cfg.sync_batchnorm:
                dist_utils.revert_sync_batchnorm(self.model)
        # The checkpoint is complete before any rank goes on to read it.
        dist_utils.barrier()
        return self._result(monitor)

    def _set_up(self, world: dist_utils.DistInfo) -> None:
        """Device, memory format, weight average, sync batch norm, optimizer and schedule."""
        cfg = self.config
        self.device = resolve_device(cfg.device)
        if world.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", world.local_rank)
        if self.device.type == "cuda":
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        self.model.to(self.device)
        self.speed = speed_utils.choose(cfg, self.model, self.device)
        if self.speed.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Before sync batch norm, so the average keeps plain batch-norm layers.
        self._average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.ema = None if self._average is None else self._average.module
        if world.world_size > 1 and cfg.sync_batchnorm:
            dist_utils.convert_sync_batchnorm(self.model, self.device)
            if self._average is not None:
                self._average.pair(self.model)
        per_epoch = steps_per_epoch(self.train_batches)
        total = cfg.epochs * per_epoch
        warmup = min(total, round(cfg.warmup_epochs * per_epoch))
        self.optimizer = make_optimizer(
            self.model, lr=cfg.lr, weight_decay=cfg.weight_decay, lr_mult=self.lr_mult,
            fused=cfg.fused_adamw and self.device.type in ("cpu", "cuda"),
        )  # fmt: skip
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(warmup, total, cfg.min_lr_ratio)
        )

    def _begin(self, resume: bool, overwrite: bool) -> int:
        """Resume the run in ``run_dir`` or start afresh; return the first epoch to train."""
        self._es = {"best": None, "best_epoch": None, "bad_epochs": 0}
        self._best_state, self._stopped, self.history = None, False, []
        resuming = False
        if self.run_dir is not None:
            if dist_utils.is_main():
                runfolder.clean_up(self.run_dir)
            # Rank 0 has finished an interrupted save before any rank looks.
            dist_utils.barrier()
            resuming = runfolder.has_run_to_resume(self.run_dir, resume, overwrite)
        start = 0
        if resuming:
            assert self.run_dir is not None
            recorded = speed_utils.resumed(self.run_dir, self.speed, self.model, self.ema)
            self.speed = recorded or self.speed
            runfolder.check_resume(self.run_dir, self.fingerprint())
            state = ckpt.load_training_state(
                self.run_dir, self.model, self.optimizer, self.scheduler, ema=self.ema
            )
            start, self.global_step = int(state["epoch"]), int(state["global_step"])
            self.history = list(state["history"])
            self._es, self._stopped = dict(state["early_stopping"]), bool(state["stopped_early"])
            if (self.run_dir / ckpt.BEST_FILE).is_file():
                self._best_state, _ = ckpt.load_weights(self.run_dir / ckpt.BEST_FILE)
        else:
            seed_everything(self.config.seed)
            self.global_step = 0
        # Nothing is written before the first epoch's checkpoint, which then
        # replaces all of an earlier run's files at once (see _save).
        self._new_run = self.run_dir is not None and not resuming
        # Every rank has read the run folder before rank 0 writes to it.
        dist_utils.barrier()
        return start

    def _train_epoch(self, epoch: int, world: dist_utils.DistInfo) -> dict[str, float]:
        """Train one epoch and validate; the epoch's row of metrics."""
        cfg = self.config
        assert self.optimizer is not None
        self.epoch = epoch
        t0 = time.perf_counter()
        if world.world_size > 1:
            # Ranks see different images; their augmentations must differ too.
            # Seeded by (seed, epoch, rank), so a resumed run repeats them.
            seed_everything((cfg.seed * 1_000_003 + epoch) * 1009 + world.rank)
        self.model.train()
        self._fire("on_train_epoch_start")
        row: dict[str, float] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        train = self._run_epoch(self.train_batches(epoch), "train")
        row.update({f"train_{k}": v for k, v in train.items()})
        if self.val_batches is not None:
            self.model.eval()
            with torch.no_grad():
                val = self._run_epoch(self.val_batches(epoch), "val", self.ema)
            row.update({f"val_{k}": v for k, v in val.items()})
        row["time_s"] = round(time.perf_counter() - t0, 3)
        return row

    def _end_epoch(self, row: dict[str, float], monitor: str, mode: str) -> None:
        """Record the row, track the best epoch, fire ``on_epoch_end``, save the checkpoint."""
        cfg = self.config
        if monitor not in row:
            raise ValueError(
                f"monitor {monitor!r} is not among the metrics {sorted(row)}; choose one of them"
            )
        self.history.append(row)
        es, value = self._es, row[monitor]
        improved = es["best"] is None or (
            value < es["best"] if mode == "min" else value > es["best"]
        )
        if improved:
            es.update(best=value, best_epoch=self.epoch + 1, bad_epochs=0)
            if cfg.restore_best:
                kept = self.model if self.ema is None else self.ema
                self._best_state = {k: v.detach().clone() for k, v in kept.state_dict().items()}
        else:
            es["bad_epochs"] += 1
        self._fire("on_epoch_end")
        if cfg.patience is not None and es["bad_epochs"] >= cfg.patience:
            self.should_stop = True
        self._stopped = self.should_stop and self.epoch + 1 < cfg.epochs
        if self.run_dir is not None and dist_utils.is_main():
            self._save(improved, es, self._stopped)

    def _save(self, improved: bool, es: dict[str, Any], stopped: bool) -> None:
        """Write this epoch's checkpoint, ``metrics.csv`` (and ``config.json``) as one unit."""
        assert self.run_dir is not None and self.model_name is not None
        state = {
            "epoch": self.epoch + 1,
            "global_step": self.global_step,
            "history": self.history,
            "early_stopping": es,
            "stopped_early": stopped,
        }
        extra: dict[str, Any] = {ckpt.METRICS_FILE: runfolder.metrics_csv(self.history)}
        if self._new_run:
            # With the first checkpoint, so that a run stopped before it leaves nothing.
            extra[ckpt.CONFIG_FILE] = self._run_config()
        ckpt.save_checkpoint(
            self.run_dir,
            self.model,
            model_name=self.model_name,
            model_meta=self.model_meta,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=state,
            best=improved,
            ema=self.ema,
            extra_files=extra,
            new_run=self._new_run,
        )
        self._new_run = False

    def _result(self, monitor: str) -> TrainResult:
        """Give the model the weights it keeps, fire ``on_fit_end``, say what the run made."""
        if self.config.restore_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
        elif self.ema is not None:
            self.model.load_state_dict(self.ema.state_dict())
        result = TrainResult(
            history=self.history,
            monitor=monitor,
            best_metric=self._es["best"],
            best_epoch=self._es["best_epoch"],
            stopped_early=self._stopped,
            run_dir=self.run_dir,
            paths={} if self.run_dir is None else runfolder.run_paths(self.run_dir),
            speed=self.speed,
        )
        self._fire("on_fit_end")
        return result
