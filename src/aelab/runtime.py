"""Device choice and seeding, kept out of constructors (see STYLE.md)."""

from __future__ import annotations

import functools
import math
import os
import platform
import random
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

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


# ----------------------------------------------------------------------------- step speed

#: x86 CPU flags (``/proc/cpuinfo``) that mean bfloat16 dot products run in
#: hardware: AVX-512 BF16 (Cooper Lake, Zen 4 and later) and AMX (Sapphire Rapids).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")

#: Below this many parameters a model is "small": its step is dominated by
#: per-operation overhead, and bf16 casts or channels-last reorders cost more
#: than they save (``convae_tiny``, 23 k parameters: bf16 0.80x, channels-last
#: 0.86x; ``convae_fmnist_small``, 2.3 M: bf16 1.9x, channels-last 1.2x).
SMALL_MODEL_PARAMETERS = 1_000_000


@dataclass(frozen=True)
class SpeedChoice:
    """The precision and memory format a training run uses, and why.

    Attributes
    ----------
    amp : {"bf16", None}
        ``"bf16"``: the step runs under bfloat16 autocast; ``None``: float32.
    channels_last : bool
        Whether the model and image batches are in channels-last memory format.
    reason : str
        Why, in words, e.g. ``"the CPU has native bf16 (avx512_bf16)"``.
    """

    amp: str | None
    channels_last: bool
    reason: str

    def describe(self) -> str:
        """One line for the log: ``"amp: bf16, channels-last: off (the CPU has ...)"``."""
        cl = "on" if self.channels_last else "off"
        return f"amp: {self.amp or 'none (float32)'}, channels-last: {cl} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, as recorded in a run's ``config.json``."""
        return {"amp": self.amp, "channels_last": self.channels_last, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: Any) -> SpeedChoice | None:
        """The choice :meth:`to_dict` recorded, or ``None`` when ``d`` is not one."""
        if not isinstance(d, dict) or d.get("amp") not in (None, "bf16"):
            return None
        return cls(d["amp"], bool(d.get("channels_last")), str(d.get("reason", "")))


def resolve_speed(
    amp: str | None = "auto",
    channels_last: bool | str = "auto",
    device: str | torch.device = "cpu",
    parameters: int | None = None,
) -> SpeedChoice:
    """Turn the ``amp`` and ``channels_last`` settings into what a run on ``device`` uses.

    Parameters
    ----------
    amp : {"auto", "bf16", "none", None}
        ``"auto"`` chooses bf16 autocast only where the hardware computes in
        bfloat16 natively (:func:`native_bf16`) and the model is not small;
        float32 otherwise. ``"bf16"`` forces autocast; ``"none"``/``None`` float32.
    channels_last : bool or "auto"
        ``"auto"`` chooses channels-last on the CPU for a model that is not
        small trained in float32 (measured 1.1-1.3x there; with bf16 it
        measured no gain, and on CUDA it is not measured, so off).
    device : str or torch.device
        Where the step runs.
    parameters : int, optional
        The model's parameter count; below :data:`SMALL_MODEL_PARAMETERS`
        "auto" keeps float32 and the default memory format. ``None``: not small.

    Returns
    -------
    SpeedChoice
        The same for the same arguments on the same machine: nothing here is timed.
    """
    if amp not in ("auto", "bf16", "none", None):
        raise ValueError(f"amp must be 'auto', 'bf16' or 'none', got {amp!r}")
    if not (isinstance(channels_last, bool) or channels_last == "auto"):
        raise ValueError(f"channels_last must be true, false or 'auto', got {channels_last!r}")
    dev = resolve_device(device)
    small = parameters is not None and parameters < SMALL_MODEL_PARAMETERS
    reasons = []
    if amp == "auto":
        native, why = native_bf16(dev)
        if native and small:
            why = f"a small model ({parameters:,} parameters) is faster in float32"
        amp = "bf16" if native and not small else None
        reasons.append(why)
    amp = None if amp == "none" else amp
    if channels_last == "auto":
        channels_last = dev.type == "cpu" and amp is None and not small
        if channels_last:
            reasons.append("channels-last pays for float32 convolutions on the CPU")
    return SpeedChoice(amp, bool(channels_last), "; ".join(reasons) or "as asked")


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes in bfloat16 natively, and why (cached per device).

    What decides is what the hardware declares, not a timing: a timing on a
    busy shared machine changes from run to run, and the choice of precision
    changes a run's numbers, so it must come out the same every time on one
    machine. On x86 CPUs: the ``avx512_bf16`` or ``amx_bf16`` flag (without
    them oneDNN emulates bfloat16, and a training step measured 20x slower
    than float32). On CUDA: ``torch.cuda.is_bf16_supported`` without
    emulation (compute capability 8.0 and later). Other CPUs (ARM, ...) and
    devices are not chosen for: unmeasured, they train in float32.
    :func:`bf16_speedup` times the difference where one wants to check.
    """
    return _native_bf16(device.type, device.index)


@functools.cache
def _native_bf16(kind: str, index: int | None) -> tuple[bool, str]:
    if kind == "cuda":
        dev = torch.device("cuda", index if index is not None else torch.cuda.current_device())
        with torch.cuda.device(dev):
            ok = torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(dev)
        return ok, f"the GPU ({name}) {'has' if ok else 'has no'} native bf16"
    if kind != "cpu":
        return False, f"bf16 autocast is not chosen automatically on {kind}"
    return cpu_bf16(platform.machine(), _cpu_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA"))


#: ``ONEDNN_MAX_CPU_ISA`` values that hold oneDNN below its bf16 instructions: with one of
#: them set, a CPU's bf16 flags do not reach the convolutions, which then emulate bfloat16.
_ONEDNN_ISA_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


def cpu_bf16(
    machine: str, flags: Collection[str] | None, max_isa: str | None = None
) -> tuple[bool, str]:
    """Whether a CPU of architecture ``machine`` with feature ``flags`` has native bf16, and why.

    Parameters
    ----------
    machine : str
        ``platform.machine()``, e.g. ``"x86_64"``.
    flags : collection of str or None
        The CPU's feature flags as ``/proc/cpuinfo`` names them; ``None`` when unknown.
    max_isa : str, optional
        ``ONEDNN_MAX_CPU_ISA``: a cap below oneDNN's bf16 instructions (e.g.
        ``"AVX2"``) means no native bf16, whatever the flags say.

    Returns
    -------
    native : bool
        True only for x86 with ``avx512_bf16`` or ``amx_bf16``.
    reason : str
    """
    if machine.lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return False, f"bf16 is chosen automatically only on x86 CPUs, not {machine}"
    if flags is None:
        return False, "the CPU's flags cannot be read, so float32"
    found = [f for f in BF16_CPU_FLAGS if f in flags]
    if found and max_isa is not None and max_isa.strip().upper() in _ONEDNN_ISA_WITHOUT_BF16:
        return False, f"ONEDNN_MAX_CPU_ISA={max_isa} holds oneDNN below its bf16 instructions"
    if found:
        return True, f"the CPU has native bf16 ({', '.join(found)})"
    return False, f"the CPU has no native bf16 (no {' or '.join(BF16_CPU_FLAGS)})"


def _cpu_flags() -> frozenset[str] | None:
    """The x86 feature flags of this CPU: ``/proc/cpuinfo`` on Linux, else torch's cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return frozenset(value.split())
    except OSError:
        pass
    # Windows and macOS: torch's copy of the cpuinfo library (private helpers, so guarded).
    checks = {"avx512_bf16": "_is_avx512_bf16_supported", "amx_bf16": "_is_amx_tile_supported"}
    try:
        return frozenset(f for f, fn in checks.items() if getattr(torch.cpu, fn)())
    except (AttributeError, RuntimeError):
        return None


def bf16_speedup(device: str | torch.device = "cpu", seconds: float = 1.0) -> float:
    """Time one small convolutional training step in float32 and under bf16 autocast.

    A check, not the decision (see :func:`native_bf16`): the steps alternate
    for about ``seconds`` and the fastest of each counts.

    Returns
    -------
    float
        float32 time / bf16 time: above 1 where bf16 is faster.
    """
    import time

    import torch.nn as nn

    dev = resolve_device(device)
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)
    ).to(dev)
    x = torch.rand(32, 32, 32, 32, generator=g).to(dev)

    def step(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        out.float().square().mean().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return time.perf_counter() - t0

    best = {False: math.inf, True: math.inf}
    step(False), step(True)  # one-off set-up
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for bf16 in best:
            best[bf16] = min(best[bf16], step(bf16))
    return best[False] / best[True]
