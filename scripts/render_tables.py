"""Render the measured tables from the committed results files into the pages that show them.

A page marks each measured table with a pair of comments naming a results file
(``benchmarks/results_BENCHMARK.json``) and one of its tables::

    <!-- table:anomaly_oneclass/auroc -->
    (everything here is rewritten: the table, then where it comes from)
    <!-- /table:anomaly_oneclass/auroc -->

    python scripts/render_tables.py           # rewrite the marked tables of README.md and docs/*.md
    python scripts/render_tables.py --check   # change nothing; exit 1 naming each table that differs

A benchmark writes its results file (``--out``); copy it to
``benchmarks/results_BENCHMARK.json``, run this script, and commit both.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import load_results  # noqa: E402  (benchmarks/ is not a package)

MARKER = re.compile(
    r"<!-- table:(?P<bench>[\w.-]+)/(?P<table>[\w.-]+) -->\n"
    r"(?P<body>.*?)"
    r"<!-- /table:(?P=bench)/(?P=table) -->",
    re.S,
)


def pages(root: Path = ROOT) -> list[Path]:
    """The pages that may hold measured tables: the README and the documentation."""
    return [root / "README.md", *sorted((root / "docs").glob("**/*.md"))]


def results_file(bench: str, root: Path = ROOT) -> Path:
    return root / "benchmarks" / f"results_{bench}.json"


def markdown_table(t: dict[str, Any]) -> str:
    """A results table as a Markdown table (cells as recorded; ``|`` escaped)."""

    def line(cells: list[str]) -> str:
        return (
            "|" + "|".join(f" {c.replace('|', chr(92) + '|')} " if c else " " for c in cells) + "|"
        )

    out = [line(t["columns"]), "|" + "---|" * len(t["columns"])]
    out += [line(r) for r in t["rows"]]
    return "\n".join(out)


def _cpu(machine: dict[str, Any]) -> str:
    flags = machine.get("cpu_flags") or []
    isa = "AVX-512" if any(f.startswith("avx512") for f in flags) else (
        "AVX2" if "avx2" in flags else "no AVX2")  # fmt: skip
    if any(f.startswith("amx") for f in flags):
        isa += ", AMX"
    threads = machine.get("threads") or {}
    n = threads.get("torch") or threads.get("OMP_NUM_THREADS")
    cores = machine.get("cpus_usable") or machine.get("cpus")
    return (f"{machine.get('cpu_model') or 'CPU unknown'} ({isa}), {cores} cores"
            + (f", {n} threads" if n else ""))  # fmt: skip


def provenance_line(bench: str, record: dict[str, Any]) -> str:
    """One line under the table: the file, the command, and what made the figures."""
    prov = record["provenance"]
    src = f"`benchmarks/results_{bench}.json`"
    if prov.get("commit") is None:
        legacy = prov.get("legacy") or "commit, package versions and machine not recorded"
        return (f"_From {src}: measured before results files existed ({legacy}); "
                f"command: `{prov['command']}`; see the file's `note`._")  # fmt: skip
    dirty = {True: " with uncommitted changes", False: "", None: " (dirty flag unknown)"}
    pkgs = prov.get("packages") or {}
    versions = ", ".join(f"{k} {pkgs[k]}" for k in ("aelab", "torch", "numpy", "scikit-learn")
                         if pkgs.get(k))  # fmt: skip
    mode = "" if record["mode"] == "full" else f" ({record['mode']} run)"
    return (f"_From {src}{mode}: `{prov['command']}` at commit {prov['commit'][:10]}"
            f"{dirty[prov.get('dirty')]}, {(prov.get('date') or 'date unknown')[:10]}; "
            f"{_cpu(prov.get('machine') or {})}; {versions}._")  # fmt: skip


def render(text: str, root: Path = ROOT) -> tuple[str, list[str]]:
    """``text`` with every marked table rendered from its results file, and the names of
    the tables whose region changed."""
    changed: list[str] = []
    cache: dict[str, dict[str, Any]] = {}

    def one(m: re.Match[str]) -> str:
        bench, name = m["bench"], m["table"]
        path = results_file(bench, root)
        if bench not in cache:
            if not path.is_file():
                raise SystemExit(f"error: table {bench}/{name}: {path.relative_to(root)} missing")
            cache[bench] = load_results(path)
        record = cache[bench]
        if name not in record["tables"]:
            raise SystemExit(f"error: {path.relative_to(root)} has no table {name!r} "
                             f"(it has {sorted(record['tables'])})")  # fmt: skip
        body = markdown_table(record["tables"][name]) + "\n\n" + provenance_line(bench, record)
        body += "\n"
        if body != m["body"]:
            changed.append(f"{bench}/{name}")
        return f"<!-- table:{bench}/{name} -->\n{body}<!-- /table:{bench}/{name} -->"

    return MARKER.sub(one, text), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="change nothing; exit 1 if a page's table differs from its file")  # fmt: skip
    ap.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    stale = []
    for page in pages(args.root):
        if not page.is_file():
            continue
        text = page.read_text(encoding="utf-8")
        new, changed = render(text, args.root)
        rel = page.relative_to(args.root)
        stale += [f"{rel}: {c}" for c in changed]
        if changed and not args.check:
            page.write_text(new, encoding="utf-8")
            print(f"{rel}: rendered {', '.join(changed)}")
    if args.check and stale:
        print("tables that differ from their results files (run scripts/render_tables.py):",
              *stale, sep="\n  ", file=sys.stderr)  # fmt: skip
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
