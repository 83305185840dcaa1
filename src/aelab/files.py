"""Small file helpers shared by every command: atomic writes and safe JSON.

Everything aelab writes goes through a temporary file in the destination folder
followed by ``os.replace``, so a crash never leaves a half-written file behind.

Testing hook: with the environment variable ``AELAB_FAIL_AFTER_WRITES=N`` the
process stops itself at its ``N``-th :func:`failure_point` (every atomic write
has one, after the data is written and before it is renamed into place) with
``os._exit(FAIL_EXIT_CODE)``, as ``kill -9`` would; ``N:raise`` raises
``OSError`` there instead, as a full disk would. The crash-safety tests use it
to stop a run inside every file write of a checkpoint. Unset, it costs one
environment lookup per write.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: The environment variable of the testing hook (see the module docstring).
FAIL_ENV = "AELAB_FAIL_AFTER_WRITES"
#: The exit status of a process the hook stopped.
FAIL_EXIT_CODE = 86
# [the setting being counted, points passed since it was set]
_armed: list[Any] = ["", 0]


def failure_point(what: str | os.PathLike[str]) -> None:
    """Count a point where a crash must leave consistent files; stop there when asked.

    A testing hook, inert unless ``AELAB_FAIL_AFTER_WRITES`` is set (see the
    module docstring): at the ``N``-th call of the process it ends the process
    (or raises ``OSError`` with ``N:raise``), naming ``what`` on stderr.
    """
    spec = os.environ.get(FAIL_ENV)
    if not spec:
        return
    if _armed[0] != spec:  # counting starts again when the setting changes
        _armed[:] = [spec, 0]
    _armed[1] += 1
    count, _, mode = spec.partition(":")
    if _armed[1] != int(count):
        return
    message = f"{FAIL_ENV}={spec}: stopped at failure point {_armed[1]} ({what})"
    if mode == "raise":
        raise OSError(message)
    print(f"aelab: {message}", file=sys.stderr, flush=True)
    os._exit(FAIL_EXIT_CODE)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        failure_point(path)
        # mkstemp makes 0600 files; give the result the mode the user's umask asks for.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# atomic_path's temporary names: mkstemp puts 8 random characters between prefix and suffix.
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def leftover_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """The temporary files that :func:`atomic_path` left in ``folder`` when a process died.

    Only safe to delete when no other process is writing into ``folder``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _TEMPORARY.fullmatch(p.name) and p.is_file())


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy scalars and arrays allowed)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, with an error that names the file when it is not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON file ({e})") from None


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Save one array as ``.npy`` atomically (never pickled)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def write_npz(path: str | os.PathLike[str], **arrays: np.ndarray) -> Path:
    """Save named arrays as ``.npz`` atomically (never pickled)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return write_bytes(path, buf.getvalue())
