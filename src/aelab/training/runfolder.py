"""The run folder of a training run: what a run finds there before it starts, and its files.

A :class:`~aelab.training.loop.Trainer` given a ``run_dir`` saves a checkpoint
there after every epoch (:func:`aelab.training.checkpoint.save_checkpoint`,
one unit per epoch). Before it starts it calls :func:`clean_up` (a save a
killed process left is finished or discarded, its temporary files deleted),
then :func:`has_run_to_resume` decides between resuming and starting afresh.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aelab.files import leftover_temporaries, read_json, records_csv
from aelab.training import checkpoint as ckpt
from aelab.training.commit import recover

__all__ = ["check_resume_config", "clean_up", "has_run_to_resume", "metrics_csv", "run_paths"]

# Settings that may change between an interrupted run and its resumption
# without changing the numbers it computes.
RESUME_FREE = frozenset({"device", "progress", "tensorboard", "log_every", "sync_batchnorm"})


def clean_up(run_dir: Path) -> None:
    """Finish (or discard) a save a killed process left in ``run_dir``; delete its temporaries.

    Only the process that writes the run may call it (rank 0 under torchrun).
    """
    recover(run_dir)
    for path in leftover_temporaries(run_dir):
        path.unlink(missing_ok=True)


def has_run_to_resume(run_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Whether there is a run to resume; refuse to silently overwrite a checkpoint.

    The messages name each setting both as the keyword of
    :meth:`Trainer.fit <aelab.training.loop.Trainer.fit>` and as the flag of
    the ``aelab`` commands, so that they read right to either kind of user.
    """
    has_state = (run_dir / ckpt.STATE_FILE).is_file()
    has_checkpoint = has_state or any(
        (run_dir / n).is_file() for n in (ckpt.MODEL_FILE, ckpt.MODEL_META_FILE)
    )
    if resume:
        if has_state:
            return True
        if has_checkpoint:
            raise ValueError(
                f"{run_dir} holds a model but no {ckpt.STATE_FILE}, so there is no training "
                "run to resume; choose another output folder, or start over with "
                "overwrite=True (--overwrite)"
            )
        warnings.warn(f"{run_dir}: nothing to resume, starting a fresh run", stacklevel=4)
        return False
    if has_checkpoint and not overwrite:
        raise ValueError(
            f"{run_dir} already holds a checkpoint; continue its run with resume=True "
            "(--resume), start over with overwrite=True (--overwrite), or choose another "
            "output folder"
        )
    return False


def check_resume_config(run_dir: Path, now: Mapping[str, Any]) -> None:
    """Refuse to resume the run in ``run_dir`` with settings other than those it started with."""
    path = run_dir / ckpt.CONFIG_FILE
    if not path.is_file():
        return
    saved = read_json(path)
    diffs = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if key == "config" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [
                f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
                for k in sorted(set(a) | set(b))
                if k not in RESUME_FREE and a.get(k) != b.get(k)
            ]
        elif a != b:
            diffs.append(f"{key}: {a!r} -> {b!r}")
    if diffs:
        raise ValueError(
            f"{path}: cannot resume with different settings ({'; '.join(diffs)}); "
            "resume with the settings the run started with, or start a new run"
        )


def metrics_csv(history: Sequence[Mapping[str, float]]) -> str:
    """The text of ``metrics.csv``: one row per epoch, the union of the rows' keys as columns."""
    return records_csv(history)


def run_paths(run_dir: Path) -> dict[str, Path]:
    """The files of a run folder that exist, by role (``model``, ``best``, ``metrics``...)."""
    names = {
        "model": ckpt.MODEL_FILE,
        "best": ckpt.BEST_FILE,
        "model_meta": ckpt.MODEL_META_FILE,
        "optimizer": ckpt.OPTIMIZER_FILE,
        "state": ckpt.STATE_FILE,
        "config": ckpt.CONFIG_FILE,
        "metrics": ckpt.METRICS_FILE,
    }
    return {k: run_dir / v for k, v in names.items() if (run_dir / v).is_file()}
