"""Replace several files of a folder as one unit: all of them become visible, or none.

A checkpoint is several files (weights, optimizer, trainer state, metrics...)
that only make sense together, and no file system renames several files at
once. So a unit is written the way a database writes a transaction, with a
redo log:

1. every file is written into a fresh staging folder ``.aelab-staging`` inside
   the folder, then a manifest naming them (and the files the unit deletes);
2. the staging folder is renamed to ``.aelab-committed``: one atomic
   ``rename``, the commit point;
3. each file is moved onto its name in the folder (``os.replace``, atomic per
   file), the deleted ones are removed, and the staging folder goes.

A process killed before step 2 leaves ``.aelab-staging``, which the next
:func:`recover` deletes: the folder still holds the previous unit, whole.
Killed after it, ``.aelab-committed`` remains and :func:`recover` finishes
step 3 (rolls forward). Readers that must not write (loading a model for
inference) look files up with :func:`committed_file`, which sees a committed
but unfinished unit as finished. A finished folder holds only the files, under
their own names, as if each had been written in place.

Files and folders are flushed to the disk (``fsync``) before the commit point
and after it, so the unit survives a power cut as well as a killed process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from aelab.files import failure_point, read_json, write_json

__all__ = ["StagedUnit", "committed_file", "recover", "staged_unit"]

STAGING = ".aelab-staging"
COMMITTED = ".aelab-committed"
MANIFEST = "manifest.json"
_FORMAT = "aelab.commit/1"


class StagedUnit:
    """The files of one unit, written into a staging folder until the commit.

    Use :meth:`path` to get where to write each file (with any writer; the
    aelab ones write atomically); the order of the calls is the order in which
    the files are moved into place.
    """

    def __init__(self, folder: Path, clear: Iterable[str]) -> None:
        self.folder = folder
        self.staging = folder / STAGING
        self.names: list[str] = []
        self.clear = list(clear)

    def path(self, name: str) -> Path:
        """Where to write the file that becomes ``folder / name`` at the commit."""
        if not name or name != Path(name).name or name.startswith(".") or name == MANIFEST:
            raise ValueError(f"{name!r}: a unit holds plain file names (no folders, no dot files)")
        if name in self.names:
            raise ValueError(f"{name!r} is already part of this unit")
        self.names.append(name)
        return self.staging / name


@contextlib.contextmanager
def staged_unit(
    folder: str | os.PathLike[str], *, clear: Iterable[str] = ()
) -> Iterator[StagedUnit]:
    """Write files into ``folder`` as one unit (see the module docstring).

    Parameters
    ----------
    folder : str or Path
        Created if needed. A unit left unfinished in it by a killed process is
        finished (or discarded, when it was not committed) first.
    clear : iterable of str
        Names removed from ``folder`` in the same unit unless the unit writes them.

    Yields
    ------
    StagedUnit
        Call ``unit.path(name)`` for every file and write it there. When the
        block ends normally the files replace their namesakes together; when it
        raises, nothing in ``folder`` changes.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    recover(folder)
    unit = StagedUnit(folder, clear)
    unit.staging.mkdir()
    try:
        yield unit
        _commit(unit)
    except BaseException:
        shutil.rmtree(unit.staging, ignore_errors=True)
        raise
    _finish(folder)


def _commit(unit: StagedUnit) -> None:
    missing = [n for n in unit.names if not (unit.staging / n).is_file()]
    if missing:
        raise ValueError(f"{unit.folder}: the unit's files {missing} were never written")
    for name in unit.names:
        _fsync(unit.staging / name)
    remove = [n for n in unit.clear if n not in unit.names]
    write_json(unit.staging / MANIFEST, {"format": _FORMAT, "files": unit.names, "remove": remove})
    _fsync(unit.staging / MANIFEST)
    _fsync(unit.staging)
    os.rename(unit.staging, unit.folder / COMMITTED)
    _fsync(unit.folder)
    failure_point(f"{unit.folder}: committed")


def _finish(folder: Path) -> None:
    """Move the committed files into place, remove the cleared ones, drop the log."""
    committed = folder / COMMITTED
    manifest = committed / MANIFEST
    if manifest.is_file():
        entry = read_json(manifest)
        for name in entry["files"]:
            if (committed / name).is_file():  # not moved yet
                os.replace(committed / name, folder / name)
                failure_point(folder / name)
        for name in entry["remove"]:
            (folder / name).unlink(missing_ok=True)
        _fsync(folder)
        manifest.unlink()
        failure_point(f"{folder}: unit finished")
    # Only temporary files of the manifest's own write can be left beside it.
    shutil.rmtree(committed)


def recover(folder: str | os.PathLike[str]) -> bool:
    """Finish a unit a killed process committed in ``folder``; discard an uncommitted one.

    Safe to call at any time no other process writes into ``folder``. Returns
    whether there was anything to do.
    """
    folder = Path(folder)
    done = False
    if (folder / COMMITTED).is_dir():
        _finish(folder)
        done = True
    if (folder / STAGING).exists():
        shutil.rmtree(folder / STAGING)
        done = True
    return done


def committed_file(folder: str | os.PathLike[str], name: str) -> Path | None:
    """Where the committed version of ``folder / name`` is now, or ``None`` if it has none.

    Reads only: inside a committed but unfinished unit (a writer is moving its
    files, or was killed while it did) the file is found in the unit.
    """
    folder = Path(folder)
    committed = folder / COMMITTED
    if committed.is_dir():
        try:
            entry = read_json(committed / MANIFEST)
        except (FileNotFoundError, ValueError):
            entry = None  # the unit has just finished
        if entry is not None:
            if name in entry["files"] and (committed / name).is_file():
                return committed / name
            if name in entry["remove"]:
                return None
    path = folder / name
    return path if path.is_file() else None


def _fsync(path: Path) -> None:
    """Flush a file's or folder's data to the disk (folders: POSIX only)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # a folder on Windows cannot be opened; its entries are durable there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
