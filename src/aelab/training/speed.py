"""What ``amp`` and ``channels_last`` resolve to for one run of the training loop.

The decision itself lives in :func:`aelab.runtime.resolve_speed` (from what
the hardware declares and the model's size, never from a timing, so one
machine always decides the same). Here: the model's share of it, keeping a
resumed run on the choices it started with, and saying once what was chosen.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn as nn

from aelab.files import read_json
from aelab.runtime import SpeedChoice, resolve_speed
from aelab.training import checkpoint as ckpt
from aelab.training.loop_config import TrainConfig

__all__ = ["announce", "choose", "resumed"]

# Lines already printed by this process: a study trains many models, and one
# line saying what "auto" chose is enough.
_ANNOUNCED: set[str] = set()


def choose(config: TrainConfig, model: nn.Module, device: torch.device) -> SpeedChoice:
    """Resolve ``config.amp`` and ``config.channels_last`` for ``model`` on ``device``."""
    n_params = sum(p.numel() for p in model.parameters())
    return resolve_speed(config.amp, config.channels_last, device, parameters=n_params)


def resumed(run_dir: Path, current: SpeedChoice, *modules: nn.Module | None) -> SpeedChoice | None:
    """The choice recorded by the run in ``run_dir``, with ``modules`` put in its memory format.

    Resolving "auto" again could choose differently on another machine (and
    bf16 changes the numbers), so a resumed run continues as it started.
    ``None`` when the run recorded no choice (it predates the record).
    """
    path = run_dir / ckpt.CONFIG_FILE
    recorded = SpeedChoice.from_dict(read_json(path).get("speed") if path.is_file() else None)
    if recorded is not None and recorded.channels_last != current.channels_last:
        fmt = torch.channels_last if recorded.channels_last else torch.contiguous_format
        for module in modules:
            if module is not None:
                module.to(memory_format=fmt)
    return recorded


def announce(choice: SpeedChoice, show: bool) -> None:
    """Print ``choice`` on standard error, once per process, when ``show``."""
    line = choice.describe()
    if show and line not in _ANNOUNCED:
        _ANNOUNCED.add(line)
        print(line, file=sys.stderr, flush=True)
