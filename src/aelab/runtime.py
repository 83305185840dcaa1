"""Device choice and seeding, kept out of constructors (see STYLE.md)."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"mps"`` into a device.

    ``"auto"`` picks CUDA when available, else CPU. Asking for CUDA on a
    machine without it raises a ``ValueError`` that says so.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but CUDA is not available; use --device cpu"
        )
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (third-party code may use the legacy global RNG)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine, or ``None`` when it cannot be told.

    Used to refuse, before allocating anything, work that cannot fit (a model
    config asking for hundreds of gigabytes). POSIX ``sysconf`` first, then
    psutil when it happens to be installed (Windows); never a hard dependency.
    """
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    return int(psutil.virtual_memory().total)


def progress_bars(wanted: bool = True) -> bool:
    """Whether to draw progress bars: when ``wanted`` and standard error is a terminal.

    A bar redraws its line many times a second; in a log file (``aelab study
    ... 2> log``) that is noise, so there a run writes one line per epoch
    and no bars.
    """
    import sys

    stream = sys.stderr
    return bool(wanted) and stream is not None and hasattr(stream, "isatty") and stream.isatty()
