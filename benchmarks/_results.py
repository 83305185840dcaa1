"""Results files: every figure a benchmark prints, with what made it.

Each benchmark ends by calling :func:`write_results`, which writes one JSON file::

    {"schema": 1, "benchmark": "ekm_quality", "mode": "full" | "quick" | "smoke",
     "provenance": {command, argv, commit, dirty, date, packages, machine},
     "tables": {NAME: {"columns": [...], "rows": [[cell, ...], ...]}},
     "data": anything else the script wants to keep (raw per-run figures)}

``scripts/render_tables.py`` renders ``tables`` into the pages that show them
(between ``<!-- table:BENCHMARK/NAME -->`` markers), and
``tests/test_render_tables.py`` checks that pages and files agree. Cells are
the strings the page shows (Markdown, e.g. ``**94.7 ± 0.1**``), so a table is
rendered exactly as it was measured, never re-rounded.

This module imports only the standard library, so that a numpy-only benchmark
does not pay for torch to describe its machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

SCHEMA = 1
REPO = Path(__file__).resolve().parents[1]
MODES = ("full", "quick", "smoke")
#: Distributions whose version is recorded when installed (None when not).
PACKAGES = (
    "torch", "numpy", "scipy", "scikit-learn", "kornia", "openTSNE", "dask", "distributed",
    "safetensors", "pillow", "scikit-image", "sklekmeans", "umap-learn",
)  # fmt: skip
#: CPU flags that change which kernels run (and so the timings and the float noise).
_FLAG = re.compile(r"^(avx2|avx512\w*|amx\w*|fma|f16c)$")
#: Environment variables that pick threads or kernels.
_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ONEDNN_MAX_CPU_ISA",
        "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")  # fmt: skip
#: Fields every provenance record has (a value may be None: not known).
PROVENANCE_FIELDS = ("command", "commit", "dirty", "date", "packages", "machine")
MACHINE_FIELDS = ("cpu_model", "cpu_flags", "cpus", "threads", "platform")


def add_arguments(parser: argparse.ArgumentParser, name: str, *, out: bool = True) -> None:
    """``--smoke`` and (unless the script has its own) ``--out`` for benchmark ``name``."""
    parser.add_argument(
        "--smoke", action="store_true",
        help="seconds, on bundled or synthetic data: checks that the script and its results "
        "file work; its figures measure nothing",
    )  # fmt: skip
    if out:
        parser.add_argument(
            "--out", default=f"results_{name}.json",
            help="results file (JSON with the command, commit, versions, machine and every "
            "table; default %(default)s in the current folder)",
        )  # fmt: skip


def mode_of(args: argparse.Namespace) -> str:
    """``smoke``, ``quick`` or ``full``, from the parsed arguments."""
    if getattr(args, "smoke", False):
        return "smoke"
    return "quick" if getattr(args, "quick", False) else "full"


def table(columns: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    """A table as a results file holds it: every cell the string the page shows."""
    cells = [[c if isinstance(c, str) else str(c) for c in row] for row in rows]
    bad = [i for i, row in enumerate(cells) if len(row) != len(columns)]
    if bad:
        raise ValueError(f"rows {bad} do not have {len(columns)} cells")
    return {"columns": [str(c) for c in columns], "rows": cells}


def has_module(name: str) -> bool:
    """Whether ``name`` can be imported (a baseline that is not installed is skipped)."""
    import importlib.util

    return importlib.util.find_spec(name) is not None


# ----------------------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                           timeout=20)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def _command(argv: list[str]) -> str:
    """The command line, the script named relative to the repository (never a home folder)."""
    args = list(argv)
    if args:
        script = Path(args[0]).resolve()
        if script.is_relative_to(REPO):
            args[0] = script.relative_to(REPO).as_posix()
    return shlex.join(["python", *args])


def _cpu() -> tuple[str | None, list[str]]:
    model, flags = None, []
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model is None:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = sorted(f for f in value.split() if _FLAG.match(f))
    return model or platform.processor() or None, flags


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    try:
        import aelab

        out["aelab"] = aelab.__version__
    except ImportError:
        out["aelab"] = None
    for dist in PACKAGES:
        try:
            out[dist] = _md.version(dist)
        except _md.PackageNotFoundError:
            out[dist] = None
    return out


def machine() -> dict[str, Any]:
    """CPU model and kernel-relevant flags, core counts, threads and platform."""
    model, flags = _cpu()
    threads: dict[str, Any] = {k: os.environ.get(k) for k in _ENV}
    torch = sys.modules.get("torch")  # only when the benchmark imported it
    threads["torch"] = torch.get_num_threads() if torch is not None else None
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu_model": model, "cpu_flags": flags, "cpus": os.cpu_count(),
            "cpus_usable": affinity, "threads": threads, "platform": platform.platform(),
            "python": platform.python_version()}  # fmt: skip


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """What made a result: command, commit and dirty flag, date, package versions, machine."""
    head = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "command": _command(sys.argv if argv is None else argv),
        "argv": list(sys.argv[1:] if argv is None else argv[1:]),
        "commit": head.strip() if head else None,
        "dirty": None if status is None else bool(status.strip()),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "packages": _versions(),
        "machine": machine(),
    }


# ----------------------------------------------------------------------------- files


def write_results(
    path: str | os.PathLike[str], benchmark: str, mode: str, *,
    tables: dict[str, dict[str, Any]], data: Any = None, inputs: list[str] | None = None,
) -> Path:  # fmt: skip
    """Write the results file (atomically) and return its path.

    ``inputs`` names earlier results files this one was made from (``--merge``):
    they are recorded relative to the repository and never overwritten.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: one of {MODES}")
    out = Path(path)
    record: dict[str, Any] = {
        "schema": SCHEMA, "benchmark": benchmark, "mode": mode, "provenance": provenance(),
        "tables": tables, "data": data,
    }  # fmt: skip
    if inputs is not None:
        record["inputs"] = [repo_name(p) for p in inputs]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(_clean(record), indent=1, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return out


def _clean(value: Any) -> Any:
    """JSON-ready: NaN and infinities become null (strict JSON), numpy scalars and arrays
    plain numbers and lists, tuples lists, paths strings."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array, torch tensor
        return _clean(value.tolist())
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def repo_name(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the repository; refuses one outside it (a results file records
    where its figures came from, and a path on one machine means nothing on another)."""
    p = Path(path).resolve()
    if not p.is_relative_to(REPO):
        raise ValueError(
            f"{path} is outside the repository: copy it under benchmarks/ first, so the "
            "merged file names only files a reader can open"
        )
    return p.relative_to(REPO).as_posix()


def check_merge(inputs: list[str], out: str) -> None:
    """Refuse a merge that would overwrite one of its inputs or name a file outside the
    repository (one line, exit 2)."""
    target = Path(out).resolve()
    for p in inputs:
        if not Path(p).is_file():
            _refuse(f"--merge: {p} does not exist")
        if Path(p).resolve() == target:
            _refuse(f"--out {out} is one of the --merge inputs: write the merge to a new file")
        try:
            repo_name(p)
        except ValueError as e:
            _refuse(f"--merge: {e}")


def _refuse(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a results file, checking that it carries its provenance and its tables."""
    with open(path, encoding="utf-8") as f:
        record = json.load(f)
    problems = validate(record)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return record


def validate(record: Any) -> list[str]:
    """What a results record lacks (an empty list when it is whole)."""
    if not isinstance(record, dict):
        return ["not a JSON object"]
    problems = [f"no {k!r}" for k in ("schema", "benchmark", "mode", "provenance", "tables")
                if k not in record]  # fmt: skip
    prov = record.get("provenance")
    if isinstance(prov, dict):
        problems += [f"provenance has no {k!r}" for k in PROVENANCE_FIELDS if k not in prov]
        mach = prov.get("machine")
        if isinstance(mach, dict):
            problems += [f"machine has no {k!r}" for k in MACHINE_FIELDS if k not in mach]
    for name, t in (record.get("tables") or {}).items():
        cols = t.get("columns") if isinstance(t, dict) else None
        rows = t.get("rows") if isinstance(t, dict) else None
        if not isinstance(cols, list) or not isinstance(rows, list):
            problems.append(f"table {name!r} needs 'columns' and 'rows'")
        elif any(not isinstance(r, list) or len(r) != len(cols) for r in rows):
            problems.append(f"table {name!r}: a row does not have {len(cols)} cells")
    return problems
