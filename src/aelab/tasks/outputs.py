"""The one path guard of every command that writes: where an output may go, and who owns it.

Every task that writes claims its output first, before any work, with
:func:`output_file` or :func:`output_folder`. The claim refuses, with one line:

- an output that is, contains, or lies inside one of the command's inputs
  (a data file or folder, a labels file, a checkpoint, a detector, a features
  file), even with ``overwrite``;
- an output inside a folder another aelab command wrote (a run, checkpoint,
  detector or study folder, known by its marker: :data:`RECORD`, ``run.json``,
  ``model.json``, ``detector.json``, ``steps/``), unless this process is
  writing that folder now (the study's steps write inside the study's folder);
- an output folder another command wrote, even with ``overwrite``;
- an existing output without ``overwrite``; with it, one that is not an
  earlier output of the same command, as its record tells: :data:`RECORD` in
  an output folder, ``.NAME`` + :data:`RECORD` beside an output file.

Then it holds the output's lock (:mod:`aelab.tasks.lock`) while the command
runs, and records the command. A command that fails leaves nothing of the
claim behind: no record, no lock, no folder it created, unless it wrote
something else there (a checkpoint to resume from). Under torchrun only rank 0
claims (and writes); the other ranks only check.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from aelab.tasks.lock import held_here, hold_lock

__all__ = [
    "LOCK",
    "RECORD",
    "check_name",
    "check_output",
    "check_output_folder",
    "folder_command",
    "output_file",
    "output_folder",
]

PathLike = str | os.PathLike[str]

#: The record of the command that wrote an output folder (``.NAME`` + it beside a file).
RECORD = "aelab-output.json"
#: The lock file in an output folder (``.NAME`` + it beside an output file).
LOCK = ".aelab.lock"


# ----------------------------------------------------------------------------- what is where


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _key(path: Path, key: str) -> Any:
    data = _json(path) if path.is_file() else None
    return data.get(key) if isinstance(data, dict) else None


def folder_command(folder: Path) -> str | None:
    """The aelab command that wrote ``folder``, or None for a folder no command marked.

    Its :data:`RECORD` says; folders older than the record are known by their
    markers: ``run.json`` (pretrain, finetune), ``detector.json`` (anomaly fit),
    ``steps/`` beside ``config.toml`` (study), ``model.json`` (a checkpoint).
    Each marker must read as aelab's, so that a stray file of that name does not count.
    """
    cmd = _key(folder / RECORD, "command")
    if isinstance(cmd, str):
        return cmd
    run = _json(folder / "run.json") if (folder / "run.json").is_file() else None
    if isinstance(run, dict) and isinstance(run.get("command"), str) and "aelab" in run:
        return str(run["command"])
    if _key(folder / "detector.json", "threshold_") is not None:
        return "anomaly fit"
    if (folder / "steps").is_dir() and (folder / "config.toml").is_file():
        return "study"
    if isinstance(_key(folder / "model.json", "model"), str):
        return "checkpoint"
    return None


def _wrote(cmd: str) -> str:
    """``a folder `aelab CMD` wrote``, for a refusal (a checkpoint may predate the records)."""
    return "a checkpoint folder" if cmd == "checkpoint" else f"a folder `aelab {cmd}` wrote"


def _kind(folder: Path) -> str:
    cmd = folder_command(folder)
    if cmd in (None, "study"):
        return "the folder" if cmd is None else "the study folder"
    return "the detector folder" if cmd == "anomaly fit" else "the checkpoint folder"


def _input_paths(inputs: Iterable[Any]) -> list[tuple[str, Path]]:
    """Each input that exists on disk, as given and resolved (a Source's labels file too)."""
    from aelab.tasks.source import Source

    found = []
    for inp in inputs:
        specs = [inp.spec, inp.labels] if isinstance(inp, Source) else [inp]
        for spec in specs:
            if isinstance(spec, str | os.PathLike) and Path(spec).exists():
                found.append((os.fspath(spec), Path(spec).resolve()))
    return found


def _guard_inputs(out: Path, inputs: Iterable[Any], option: str) -> None:
    target = out.resolve()
    for given, src in _input_paths(inputs):
        if target == src:
            raise ValueError(f"{option} {out} is one of this command's inputs; write elsewhere")
        if target in src.parents:
            raise ValueError(
                f"{option} {out} contains {given}, an input of this command; write elsewhere"
            )
        if src in target.parents:
            raise ValueError(
                f"{option} {out} lies inside {_kind(src)} {given}, an input of this command; "
                "write it outside that folder"
            )


def _lock_of(path: Path, folder: bool) -> Path:
    return path / LOCK if folder else path.parent / f".{path.name}{LOCK}"


def _record_of(path: Path, folder: bool) -> Path:
    return path / RECORD if folder else path.parent / f".{path.name}.{RECORD}"


def _writing_inside(out: Path) -> bool:
    """Whether ``out`` lies inside a folder this process is writing (holds the lock of)."""
    return any(held_here(p / LOCK) for p in out.resolve().parents)


def _guard_marked(out: Path, option: str) -> None:
    """Refuse ``out`` inside a folder another command wrote (unless this process writes it)."""
    target = out.resolve()
    for parent in target.parents:
        if held_here(parent / LOCK):
            return  # this process writes that folder (and was let in there)
        cmd = folder_command(parent)
        if cmd is not None:
            raise ValueError(
                f"{option} {out} lies inside {parent}, {_wrote(cmd)}; write it elsewhere"
            )


def _check_owner(out: Path, command: str, folder: bool, option: str) -> None:
    """With ``overwrite``: ``out`` must be an earlier output of ``command`` (or ours to write)."""
    if _writing_inside(out):
        return
    record = _record_of(out, folder)
    owner = folder_command(out) if folder else _key(record, "command")
    if owner != command:
        by = f"`aelab {owner}`" if owner else "another program (it has no aelab record)"
        raise ValueError(
            f"{option} {out} was written by {by}; --overwrite replaces only an earlier "
            f"output of `aelab {command}`: remove it yourself or choose another name"
        )


def _guard_writable(out: Path, option: str) -> None:
    """Refuse an output whose nearest existing folder is a file, or cannot be written."""
    probe = out.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{option} {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise ValueError(
            f"{option} {out}: cannot write in {probe}; choose a folder you can write to"
        )


# ----------------------------------------------------------------------------- the checks


def check_name(name: str, option: str = "--name") -> str:
    """Check that ``name`` is one folder name (no separator, not ``.``/``..``, not absolute)."""
    bad = (
        not name
        or name in (".", "..")
        or any(s in name for s in ("/", "\\", "\0", os.sep))
        or Path(name).is_absolute()
    )
    if bad:
        raise ValueError(f"{option} {name!r} must be one folder name, without / or ..")
    return name


def check_output(
    out: PathLike,
    *,
    inputs: Iterable[Any] = (),
    overwrite: bool = False,
    option: str = "--out",
    command: str | None = None,
) -> Path:
    """Check that file ``out`` may be written (see the module docstring); return it as a Path.

    ``inputs`` are paths (or :class:`~aelab.tasks.source.Source`); those not
    on disk (``fashion-mnist``) are skipped. With ``command`` an existing
    ``out`` must also be that command's earlier output to be overwritten.

    Raises
    ------
    ValueError
        When ``out`` is a folder, exists and ``overwrite`` is false, is (or
        lies inside) one of ``inputs`` or a folder another command wrote.
    """
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{option} {out} is a folder; give a file name")
    _guard_writable(out, option)
    _guard_inputs(out, inputs, option)
    _guard_marked(out, option)
    if out.exists():
        if not overwrite:
            raise ValueError(
                f"{option} {out} exists; add --overwrite to replace it, or choose another name"
            )
        if command is not None:
            _check_owner(out, command, False, option)
    return out


def check_output_folder(
    out: PathLike,
    names: Sequence[str],
    *,
    inputs: Iterable[Any] = (),
    overwrite: bool = False,
    option: str = "--out",
    command: str | None = None,
) -> Path:
    """Check that folder ``out`` may receive the files ``names``; return it as a Path.

    An existing folder is fine as long as none of ``names`` is in it (or
    ``overwrite`` is given); a file at ``out`` is refused. With ``command``,
    a folder another command wrote is refused even with ``overwrite``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {out} is a file; give a folder")
    _guard_writable(out, option)
    _guard_inputs(out, inputs, option)
    _guard_marked(out, option)
    if command is not None and not _writing_inside(out):
        owner = folder_command(out) if out.is_dir() else None
        if owner is not None and owner != command:
            raise ValueError(f"{option} {out} is {_wrote(owner)}; write elsewhere")
    there = [n for n in names if (out / n).exists()]
    if there and not overwrite:
        raise ValueError(
            f"{option} {out} already holds {', '.join(there)}; add --overwrite to replace "
            "them, or choose another folder"
        )
    if there and command is not None:
        _check_owner(out, command, True, option)
    return out


# ----------------------------------------------------------------------------- the claims


def _writes_here() -> bool:
    """Whether this process writes files: rank 0 under torchrun, or a single process."""
    return os.environ.get("RANK", "0") in ("", "0")


def _make_dirs(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created, deepest first."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_dirs(created: list[Path]) -> None:
    for d in created:
        try:
            d.rmdir()
        except OSError:
            return  # not empty: something else was written there


def _write_record(path: Path, command: str) -> None:
    """Write the small record file without a failure point of its own (see aelab.files)."""
    from aelab import __version__

    tmp = path.parent / f"{path.name}.{os.getpid()}.part"
    tmp.write_text(json.dumps({"command": command, "aelab": __version__}) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _snapshot(folder: Path) -> set[tuple[str, int, int]]:
    """The folder's entries as (name, size, mtime), our own bookkeeping left out."""
    if not folder.is_dir():
        return set()
    seen = set()
    for p in folder.iterdir():
        if p.name in (RECORD, LOCK) or p.name.startswith((LOCK + ".", RECORD + ".")):
            continue
        with contextlib.suppress(OSError):
            st = p.stat()
            seen.add((p.name, st.st_size, st.st_mtime_ns))
    return seen


@contextlib.contextmanager
def _locked(path: Path, folder: bool, option: str) -> Iterator[None]:
    """Hold the output's lock (creating its folder); on failure remove the folders created."""
    where = path if folder else path.parent
    try:
        created = _make_dirs(where)
    except OSError as e:
        raise ValueError(f"{option} {path}: cannot create {where} ({e.strerror})") from None
    try:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(hold_lock(_lock_of(path, folder), f"{option} {path}"))
            except OSError as e:  # /proc, a read-only disk: never name the temporary file
                raise ValueError(
                    f"{option} {path}: cannot write in {where} ({e.strerror}); choose a folder "
                    "you can write to"
                ) from None
            yield
    except BaseException:
        _remove_dirs(created)
        raise


@contextlib.contextmanager
def output_file(
    out: PathLike,
    command: str,
    *,
    inputs: Iterable[Any] = (),
    overwrite: bool = False,
    option: str = "--out",
) -> Iterator[Path]:
    """Claim file ``out`` for ``command`` for the block: check it, lock it, record it on success.

    See the module docstring for what is refused (a ValueError, one line).
    """
    out = check_output(out, inputs=inputs, overwrite=overwrite, option=option, command=command)
    if not _writes_here():
        yield out
        return
    with _locked(out, False, option):
        yield out
        if out.exists() and not _writing_inside(out):
            _write_record(_record_of(out, False), command)


@contextlib.contextmanager
def output_folder(
    out: PathLike,
    command: str,
    *,
    names: Sequence[str] = (),
    inputs: Iterable[Any] = (),
    overwrite: bool = False,
    option: str = "--out",
) -> Iterator[Path]:
    """Claim folder ``out`` for ``command`` for the block: check, lock and record it.

    ``names`` are the files the command writes there (an existing one needs
    ``overwrite``); a folder another command wrote is refused. A block that fails and wrote nothing else into the folder
    leaves no trace of the claim.
    """
    out = check_output_folder(
        out, names, inputs=inputs, overwrite=overwrite, option=option, command=command
    )
    if not _writes_here():
        yield out
        return
    with _locked(out, True, option):
        record = _record_of(out, True)
        before, had_record = _snapshot(out), record.is_file()
        for stale in out.glob(f"{RECORD}.*.part"):  # a record write a killed process left
            stale.unlink(missing_ok=True)
        _write_record(record, command)
        try:
            yield out
        except BaseException:
            if not had_record and _snapshot(out) == before:
                record.unlink(missing_ok=True)
            raise
