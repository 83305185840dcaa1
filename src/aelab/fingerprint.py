"""What produced a result: settings, data, the results it started from, and the code.

A training run (``config.json``) and every study step (``steps/<name>.json``)
record a :class:`Fingerprint`. ``--resume`` reuses a result only when the
fingerprint it recorded equals the one the run would have now, and otherwise
names the first difference in words (``"classes changed ([0, 1, 2] -> [7, 8])"``).
So a result reused is always one these settings, this data and this code would
make, the way a build tool decides what to rebuild.

The parts:

- **settings**: the resolved settings, flat (``epochs``, ``lr``...), without
  the ones that do not change the numbers (:data:`EXEMPT`: the device, the
  number of worker processes, progress and logging);
- **data**: one digest per set of images a result was computed from
  (:func:`array_digest` hashes the pixels and labels of data held in memory;
  :func:`files_digest` stamps streamed or memory-mapped files by path, size and
  modification time, since reading them whole could take longer than the run);
- **inputs**: the digests of the results it started from (the checkpoint a
  fine-tuning run starts from, the steps a study step reads);
- **code**: :func:`code_version`: the package version, plus the git commit and
  whether the package's files differ from it when aelab runs from a checkout.

This module imports nothing else of aelab and no heavy library (numpy only).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EXEMPT",
    "Fingerprint",
    "array_digest",
    "canonical",
    "code_version",
    "digest",
    "files_digest",
    "flat_settings",
]

#: Settings that may change between a result and its reuse without changing its numbers:
#: where it runs (device, worker processes) and what it prints or logs.
EXEMPT = frozenset(
    {"device", "num_workers", "progress", "tensorboard", "log_every", "sync_batchnorm", "verbose"}
)


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data (dataclasses as dicts, tuples as lists), to compare and hash.

    Raises
    ------
    TypeError
        For a value JSON cannot hold (an object, a function).
    """
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in fields(value)}
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalars
    if callable(tolist):
        return canonical(tolist())
    raise TypeError(f"a fingerprint cannot hold a {type(value).__name__}")


def digest(value: Any) -> str:
    """A short stable hash of JSON-able ``value`` (key order does not matter)."""
    text = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def array_digest(*arrays: Any) -> str:
    """A hash of the arrays' dtypes, shapes and contents (``None`` entries count as absent).

    Parameters
    ----------
    *arrays : array-like or None
        numpy arrays or CPU tensors (anything ``numpy.asarray`` reads without copying).
    """
    h = hashlib.blake2b(digest_size=12)
    for a in arrays:
        if a is None:
            h.update(b"none;")
            continue
        arr = np.ascontiguousarray(np.asarray(a))
        h.update(f"{arr.dtype.str}{arr.shape};".encode())
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()


def files_digest(paths: Iterable[str | os.PathLike[str]]) -> str:
    """A hash of the files' resolved paths, sizes and modification times (folders walked).

    For data too large to read just to decide whether it changed: a file
    written again gets a new modification time.
    """
    stamps: list[list[Any]] = []
    for p in paths:
        root = Path(p).resolve()
        found = sorted(root.rglob("*")) if root.is_dir() else [root]
        for f in found:
            try:
                st = f.stat()
            except OSError:
                stamps.append([str(f), None])
                continue
            if not f.is_dir():
                stamps.append([str(f), st.st_size, st.st_mtime_ns])
    return digest(stamps)


def flat_settings(config: Any, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    """The fields of dataclass ``config`` as one flat dict, without :data:`EXEMPT` and ``skip``.

    A field that is itself a dataclass (a study section's ``settings``) is
    flattened into the same dict, the way its keys are written in the TOML
    file; a name the outer dataclass also has is kept as ``settings.NAME``.
    """
    out: dict[str, Any] = {}
    left_out = EXEMPT | set(skip)
    nested: list[tuple[str, Any]] = []
    for f in fields(config):
        value = getattr(config, f.name)
        if f.name in left_out:
            continue
        if is_dataclass(value) and not isinstance(value, type):
            nested.append((f.name, value))
        else:
            out[f.name] = canonical(value)
    for name, value in nested:
        for key, v in flat_settings(value, skip=skip).items():
            out[f"{name}.{key}" if key in out else key] = v
    return out


def _git(repo: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.cache
def code_version() -> dict[str, Any]:
    """The code that runs: ``{"aelab": version}``, plus ``commit`` and ``dirty`` from a checkout.

    The package's own folder decides: when its files are tracked by a git
    checkout, ``commit`` is that checkout's HEAD and ``dirty`` whether any
    tracked file of the package differs from it; then ``edits`` is a digest of
    those differences, so that editing an already edited checkout counts too.
    Without git, or installed outside a checkout, the version alone (then
    "0.1.0" never changes).
    """
    from aelab import __version__

    package = Path(__file__).resolve().parent
    out: dict[str, Any] = {"aelab": __version__}
    # Tracked, so an installed copy that merely lies inside some repository is not taken for one.
    if _git(package, "ls-files", "--error-unmatch", "__init__.py") is None:
        return out
    commit = _git(package, "rev-parse", "HEAD")
    diff = _git(package, "diff", "HEAD", "--", ".")
    if commit is None or diff is None:
        return out
    edits = {"edits": digest(diff)} if diff.strip() else {}
    return {**out, "commit": commit.strip(), "dirty": bool(edits), **edits}


def _describe_code(code: Mapping[str, Any]) -> str:
    text = f"aelab {code.get('aelab')}"
    if code.get("commit"):
        text += f" at {str(code['commit'])[:10]}" + (" with edits" if code.get("dirty") else "")
    return text


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Fingerprint:
    """What produced a result (see the module docstring).

    Parameters
    ----------
    settings : dict
        Resolved settings, flat, JSON-able, without :data:`EXEMPT` (see :func:`flat_settings`).
    data : dict of str to str
        A digest per named set of images.
    inputs : dict of str to str
        A digest per result it started from (a checkpoint, an earlier step).
    code : dict
        :func:`code_version` (the default).
    """

    settings: dict[str, Any] = field(default_factory=dict)
    data: dict[str, str | None] = field(default_factory=dict)
    inputs: dict[str, str | None] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=lambda: dict(code_version()))

    @property
    def digest(self) -> str:
        """One hash of all four parts: what a later result that starts from this one records."""
        return digest(self.to_json())

    def to_json(self) -> dict[str, Any]:
        return canonical(
            {"settings": self.settings, "data": self.data, "inputs": self.inputs, "code": self.code}
        )

    @classmethod
    def from_json(cls, record: Any) -> Fingerprint | None:
        """The fingerprint a result recorded; ``None`` when it recorded none (or not one of these)."""
        if not isinstance(record, Mapping):
            return None
        parts = [record.get(k) for k in ("settings", "data", "inputs", "code")]
        if not all(isinstance(p, Mapping) for p in parts):
            return None
        return cls(*(dict(p) for p in parts))

    def change_from(self, old: Fingerprint | None) -> str | None:
        """The first difference from ``old`` in words (``"epochs changed (2 -> 3)"``); ``None``: same.

        Settings come first, in their order, then the data, the inputs and the code.
        """
        if old is None:
            return "no fingerprint recorded (made by an older aelab)"
        now, then = self.to_json(), old.to_json()
        for key in [*now["settings"], *(k for k in then["settings"] if k not in now["settings"])]:
            a, b = then["settings"].get(key), now["settings"].get(key)
            if a != b:
                return f"{key} changed ({_short(a)} -> {_short(b)})"
        for part in ("data", "inputs"):
            for key in [*now[part], *(k for k in then[part] if k not in now[part])]:
                if key not in then[part]:
                    return f"{key} added"
                if key not in now[part]:
                    return f"{key} removed"
                if then[part][key] != now[part][key]:
                    return f"{key} changed"
        if now["code"] != then["code"]:
            return f"code changed ({_describe_code(then['code'])} -> {_describe_code(now['code'])})"
        return None
