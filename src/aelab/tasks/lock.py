"""One writer per output: a lock file that names the host and process writing it.

:func:`hold_lock` creates the lock file atomically (written in full under a
temporary name, then hard-linked to its name, which fails when the name
exists), so a second writer always finds a complete record of the first: it is
refused with one line naming that host and process id. A lock left by a
process that is gone (killed with SIGKILL, say) on this host is taken over by
the next writer; a lock of another host is never taken over, since from here
nothing tells whether that process still runs (a multi-node run on a shared
filesystem). The lock is re-entrant within one process: the study holds its
folder's lock for all its steps, and each step locks its own output.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

try:  # serialises the take-over of a stale lock between processes of one host
    import fcntl
except ImportError:  # pragma: no cover  (not on Windows)
    fcntl = None  # type: ignore[assignment]

__all__ = ["LockHolder", "held_here", "hold_lock", "lock_holder"]

# Resolved lock paths this process holds, with how many times it entered each.
_HELD: dict[str, int] = {}


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: host name, process id, the process's start time and a token.

    ``started`` is the process's start time as the kernel counts it (Linux),
    so that a process id reused by a new process does not pass for the holder.
    """

    host: str
    pid: int
    started: str = ""
    token: str = ""

    def describe(self) -> str:
        return f"process {self.pid} on host {self.host}"


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` (field 22 of ``/proc/PID/stat``), or "" unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2 :].split()  # the name in (...) may hold spaces
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else "zombie"


def _me() -> LockHolder:
    pid = os.getpid()
    return LockHolder(socket.gethostname(), pid, _start_time(pid), secrets.token_hex(8))


def _alive(holder: LockHolder) -> bool:
    """Whether the holder may still run (always true for another host: nothing tells)."""
    if holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    now = _start_time(holder.pid)
    return now != "zombie" and not (holder.started and now and now != holder.started)


def lock_holder(lock: str | os.PathLike[str]) -> LockHolder | None:
    """The holder recorded in lock file ``lock``; None when there is none or it is unreadable."""
    try:
        data = json.loads(Path(lock).read_text(encoding="utf-8"))
        return LockHolder(
            str(data["host"]), int(data["pid"]), str(data.get("started", "")),
            str(data.get("token", "")),
        )  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _create(lock: Path, me: LockHolder) -> bool:
    """Create ``lock`` holding ``me``, complete from its first moment; False when it exists."""
    fd, tmp = tempfile.mkstemp(prefix=f"{lock.name}.", suffix=".tmp", dir=lock.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(me), f)
        try:
            os.link(tmp, lock)
            return True
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links: create exclusively, then write
            try:
                fd2 = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd2, "w", encoding="utf-8") as f:
                json.dump(asdict(me), f)
            return True
    finally:
        with contextlib.suppress(FileNotFoundError):  # a run's clean-up may have taken it
            os.unlink(tmp)


def _take_over(lock: Path, stale: LockHolder) -> None:
    """Remove ``lock`` if it still holds ``stale``: one process of this host at a time."""
    fd = os.open(lock.parent, os.O_RDONLY)
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a filesystem without flock
                fcntl.flock(fd, fcntl.LOCK_EX)
        if lock_holder(lock) == stale:
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)  # releases the flock


def _acquire(lock: Path, what: str) -> LockHolder:
    me = _me()
    for _ in range(5):
        if _create(lock, me):
            return me
        holder = lock_holder(lock)
        if holder is None:
            if lock.exists():
                raise ValueError(
                    f"{what}: the lock file {lock} is unreadable; remove it if no aelab command "
                    "is writing there"
                )
            continue  # released between our two looks: try again
        if _alive(holder):
            here = holder.host == me.host
            raise ValueError(
                f"{what} is being written by process {holder.pid} on host {holder.host}"
                f"{' (this host)' if here else ''} (lock {lock}); wait for it to finish or "
                "write elsewhere" + ("" if here else "; remove the lock if that run is gone")
            )
        _take_over(lock, holder)
    raise ValueError(f"{what}: could not take the lock {lock}; try again")


def held_here(lock: str | os.PathLike[str]) -> bool:
    """Whether this process holds lock file ``lock`` (taken with :func:`hold_lock`)."""
    return str(Path(lock).resolve()) in _HELD


@contextlib.contextmanager
def hold_lock(lock: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold lock file ``lock`` for the block; ``what`` names the output in the refusal.

    Re-entrant in one process. The folder of ``lock`` must exist.

    Raises
    ------
    ValueError
        When another live process holds it (one line naming its host and
        process id), or it is held from another host.
    """
    key = str(Path(lock).resolve())
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    me = _acquire(Path(key), what)
    _HELD[key] = 1
    try:
        yield
    finally:
        del _HELD[key]
        if lock_holder(key) == me:
            Path(key).unlink(missing_ok=True)
