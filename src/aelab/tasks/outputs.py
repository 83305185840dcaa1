"""What tasks write: refuse to clobber, never write over an input, CSV tables that round-trip.

Every command that writes calls :func:`check_output` before any work: an
existing output is refused unless ``overwrite`` is given, and an output that
is one of the command's inputs, or lies inside an input checkpoint or
detector folder, is refused even then.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

__all__ = ["check_output", "check_output_folder"]

PathLike = str | os.PathLike[str]


#: Files that mark a folder as a checkpoint or a detector: nothing is written into one.
_MARKERS = ("model.json", "detector.json")


def _guard_inputs(out: Path, inputs: Iterable[PathLike | None], option: str) -> None:
    target = out.resolve()
    for inp in inputs:
        if inp is None or not isinstance(inp, str | os.PathLike):
            continue
        src = Path(inp)
        if not src.exists():
            continue  # a built-in data name such as fashion-mnist
        src = src.resolve()
        if target == src:
            raise ValueError(f"{option} {out} is one of this command's inputs; write elsewhere")
        if src.is_dir() and src in target.parents and any((src / m).is_file() for m in _MARKERS):
            raise ValueError(
                f"{option} {out} lies inside the checkpoint folder {inp}; write it outside that folder"
            )


def check_output(
    out: PathLike,
    *,
    inputs: Iterable[PathLike | None] = (),
    overwrite: bool = False,
    option: str = "--out",
) -> Path:
    """Check that file ``out`` may be written; return it as a Path.

    Raises
    ------
    ValueError
        When ``out`` is a folder, exists and ``overwrite`` is false, or is (or
        lies inside) one of ``inputs``.
    """
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{option} {out} is a folder; give a file name")
    _guard_inputs(out, inputs, option)
    if out.exists() and not overwrite:
        raise ValueError(
            f"{option} {out} exists; add --overwrite to replace it, or choose another name"
        )
    if out.parent.exists() and not out.parent.is_dir():
        raise ValueError(f"{option} {out}: {out.parent} is a file, not a folder")
    return out


def check_output_folder(
    out: PathLike,
    names: Sequence[str],
    *,
    inputs: Iterable[PathLike | None] = (),
    overwrite: bool = False,
    option: str = "--out",
) -> Path:
    """Check that folder ``out`` may receive the files ``names``; return it as a Path.

    An existing folder is fine as long as none of ``names`` is in it (or
    ``overwrite`` is given); a file at ``out`` is refused.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {out} is a file; give a folder")
    _guard_inputs(out, inputs, option)
    there = [n for n in names if (out / n).exists()]
    if there and not overwrite:
        raise ValueError(
            f"{option} {out} already holds {', '.join(there)}; add --overwrite to replace "
            "them, or choose another folder"
        )
    return out
