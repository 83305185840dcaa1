"""The run folder of a training run: what a run finds there before it starts, and its files.

A :class:`~aelab.training.loop.Trainer` given a ``run_dir`` saves a checkpoint
there after every epoch (:func:`aelab.training.checkpoint.save_checkpoint`,
one unit per epoch). Before it starts it calls :func:`clean_up` (a save a
killed process left is finished or discarded, its temporary files deleted),
then :func:`has_run_to_resume` decides between resuming and starting afresh.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aelab.files import leftover_temporaries, read_json, records_csv
from aelab.fingerprint import EXEMPT, Fingerprint, canonical, flat_settings
from aelab.training import checkpoint as ckpt
from aelab.training.commit import recover

__all__ = [
    "check_resume",
    "checkpoint_digest",
    "clean_up",
    "has_run_to_resume",
    "metrics_csv",
    "run_fingerprint",
    "run_paths",
]


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


def run_fingerprint(
    config: Any,
    run_config: Mapping[str, Any],
    data: Mapping[str, str | None],
    inputs: Mapping[str, str | None],
) -> Fingerprint:
    """What a training run is made from: its settings (``config``'s fields and ``run_config``,
    less :data:`~aelab.fingerprint.EXEMPT`), its data, its inputs and the code.

    ``run_config["data"]`` (the sizes of the sets) is left to ``data``, whose
    digests name the set that changed.
    """
    extra = {k: canonical(v) for k, v in run_config.items() if k not in EXEMPT | {"data"}}
    return Fingerprint(
        settings={**flat_settings(config), **extra}, data=dict(data), inputs=dict(inputs)
    )


def check_resume(run_dir: Path, now: Fingerprint) -> None:
    """Refuse to resume the run in ``run_dir`` unless it was started from what makes ``now``.

    The settings that do not change the numbers (the device, the number of
    processes, progress and logging: :data:`aelab.fingerprint.EXEMPT`) may differ.
    """
    path = run_dir / ckpt.CONFIG_FILE
    if not path.is_file():
        return
    recorded = read_json(path)
    change = now.change_from(Fingerprint.from_json(recorded.get("fingerprint")))
    if change:
        raise ValueError(
            f"{run_dir}: cannot resume, {change}; resume with what the run started with, "
            "or start over with overwrite=True (--overwrite)"
        )


def checkpoint_digest(folder: str | os.PathLike[str]) -> str:
    """A digest of the checkpoint in ``folder``: its weights and ``model.json``, byte for byte.

    What a run started from this checkpoint records as its input, so that it
    is not resumed from (nor a study step reused over) a checkpoint replaced since.
    """
    h = hashlib.blake2b(digest_size=12)
    for name in (ckpt.MODEL_FILE, ckpt.MODEL_META_FILE):
        path = Path(folder) / name
        h.update(f"{name};".encode())
        if path.is_file():
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


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
