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
import csv
import io
import json
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file asked for, never the temporary one
        raise type(e)(f"{path}: cannot write it there ({e.strerror or e})") from None
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
    """Turn one object ``json`` cannot write into plain Python (before the NaN pass)."""
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def _finite_json(obj: Any) -> Any:
    """``obj`` with every NaN or infinity replaced by ``None``, numpy turned into Python.

    ``json.dumps`` never calls ``default`` for floats, so non-finite values have
    to be found by walking the object; numpy values are converted on the way
    (an array's ``tolist`` may itself hold NaN, hence the second pass).
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, dict):
        return {
            (_json_default(k) if isinstance(k, np.generic) else k): _finite_json(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list | tuple):
        return [_finite_json(v) for v in obj]
    return _finite_json(_json_default(obj))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented, strict JSON atomically.

    numpy scalars and arrays and paths are allowed. NaN and infinities, which
    strict JSON has no word for (Python would write a bare ``NaN`` that other
    parsers refuse), are written as ``null``, wherever they sit.

    Raises
    ------
    TypeError
        For an object JSON cannot represent (a set, a custom class...).
    """
    text = json.dumps(_finite_json(obj), indent=2, allow_nan=False)
    return write_text(path, text + "\n")


#: First characters that make a spreadsheet read a text cell as a formula (OWASP's
#: CSV-injection list: = + - @ tab and carriage return), plus the guard's own quote,
#: so that a guarded cell is always told apart from one that began with a quote.
CSV_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")


def format_csv_cell(value: object) -> str:
    """One CSV cell as text, safe to open in a spreadsheet.

    Numbers (Python or numpy ints and floats, negative ones included) are
    written as numbers: ``-2.5`` stays ``-2.5``, NaN and infinities as ``nan``,
    ``inf`` and ``-inf``. ``None`` is the empty cell and booleans are ``True``
    / ``False``. Anything else is text (``str(value)``), and text that starts
    with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a single
    quote ``'`` in front, as the OWASP advice on CSV injection says, so that a
    spreadsheet shows ``=cmd|' /C calc'!A0`` instead of running it. Text that
    starts with ``'`` gets one more, so :func:`read_csv` can undo the guard
    exactly. Quoting of commas, quotes and line breaks is left to the writer.

    Parameters
    ----------
    value : object
        The value of the cell.

    Returns
    -------
    str
    """
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        # str() of a numpy float is its shortest round-tripping form, as for Python floats.
        return str(value) if math.isfinite(value) else str(float(value))
    text = str(value)
    return "'" + text if text.startswith(CSV_FORMULA_TRIGGERS) else text


def _unguard_cell(text: str) -> str:
    """Undo :func:`format_csv_cell`'s quote on text cells."""
    if text.startswith("'") and text[1:].startswith(CSV_FORMULA_TRIGGERS):
        return text[1:]
    return text


class _RowSink:
    """A file-like target that writes each CSV row with a ``\\n`` line end.

    The ``csv`` writer quotes a field only when it holds a character of its
    line terminator; with ``"\\n"`` a lone ``"\\r"`` would go out unquoted and
    split the row when read back. So the writer ends rows with ``"\\r\\n"``
    (quoting both) and the sink turns that ending into ``"\\n"``; CPython's
    writer hands over each row in one ``write`` call.
    """

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, row: str) -> int:
        if not row.endswith("\r\n"):  # pragma: no cover  (a csv module that splits rows)
            raise RuntimeError("the csv writer did not write a whole row at once")
        self.parts.append(row[:-2] + "\n")
        return len(row)


def csv_text(
    header: Sequence[str], rows: Iterable[Sequence[object]], *, where: object = "csv"
) -> str:
    """The text :func:`write_csv` writes: safe to read back and to open in a spreadsheet.

    Every cell goes through :func:`format_csv_cell` (numbers as numbers, text
    guarded against formula injection) and the ``csv`` module, which quotes any
    field holding a comma, a quote, ``\\r`` or ``\\n``, so each field reads back
    as one field with ``csv.reader``. Rows end with ``\\n``.

    Raises
    ------
    ValueError
        When a row's length differs from the header's (``where`` names the table).
    """
    sink = _RowSink()
    writer = csv.writer(sink, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    header = list(header)
    writer.writerow([format_csv_cell(h) for h in header])
    for i, row in enumerate(rows):
        cells = [format_csv_cell(v) for v in row]
        if len(cells) != len(header):
            raise ValueError(f"{where}: row {i} has {len(cells)} cells for {len(header)} columns")
        writer.writerow(cells)
    return "".join(sink.parts)


def write_csv(
    path: str | os.PathLike[str],
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
) -> Path:
    """Write a CSV file atomically (:func:`csv_text`): UTF-8, rows ending with ``\\n``.

    Parameters
    ----------
    path : str or path
        File to write (its folder is created).
    header : sequence of str
        Column names (guarded like any text cell).
    rows : iterable of sequences
        One sequence of cells per row, each as long as ``header``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        When a row's length differs from the header's; nothing is written.
    """
    return write_text(path, csv_text(header, rows, where=path))


def read_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[list[str]]]:
    """Read a file written by :func:`write_csv`: (header, rows), all cells as text.

    The formula guard is undone, so text cells come back as they were given;
    numbers come back as their text (``"-2.5"``), the empty cell as ``""``.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        When it is not UTF-8 text, or is empty.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            table = [[_unguard_cell(c) for c in r] for r in csv.reader(f)]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable CSV file ({e})") from None
    if not table:
        raise ValueError(f"{path}: the CSV file is empty (not even a header)")
    return table[0], table[1:]


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


def records_csv(records: Sequence[Mapping[str, object]]) -> str:
    """Dict rows as CSV text (:func:`csv_text`): the union of their keys as columns.

    Columns come in first-seen order; a row without a key leaves its cell
    empty, and a list or tuple inside a row (cluster sizes) is joined with ``:``.
    This is how every history table is written (``metrics.csv``, ``rounds.csv``).
    """
    columns: list[str] = []
    for r in records:
        columns += [k for k in r if k not in columns]

    def cell(v: object) -> object:
        return ":".join(map(str, v)) if isinstance(v, list | tuple) else v

    return csv_text(columns, ([cell(r.get(c)) for c in columns] for r in records))


def write_records(path: str | os.PathLike[str], records: Sequence[Mapping[str, object]]) -> Path:
    """Write dict rows as a CSV table atomically (:func:`records_csv`)."""
    return write_text(path, records_csv(records))
