"""What tasks write: refuse to clobber, never write over an input, CSV tables that round-trip.

Every command that writes calls :func:`check_output` before any work: an
existing output is refused unless ``overwrite`` is given, and an output that
is one of the command's inputs, or lies inside an input checkpoint or
detector folder, is refused even then.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aelab.files import write_text

__all__ = ["check_output", "check_output_folder", "write_records", "write_table"]

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


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return value


def write_table(path: PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV table atomically through the ``csv`` module (fields quoted as needed)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(header)
    for row in rows:
        w.writerow([_cell(v) for v in row])
    return write_text(path, buf.getvalue())


def write_records(path: PathLike, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write dict rows as a CSV table: the union of their keys as columns, in first-seen order.

    Lists inside a row (cluster sizes) are joined with ``:``.
    """
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]

    def value(v: Any) -> Any:
        return ":".join(map(str, v)) if isinstance(v, list | tuple) else v

    return write_table(path, columns, ([value(r.get(c)) for c in columns] for r in records))
