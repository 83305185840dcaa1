"""How far results drift when only float rounding changes: the bound behind tests/noise.py.

The tests marked ``numerics`` compare results that differ by rounding alone
(two processes against one, a batch encoded in other slices, AVX-512 kernels
against AVX2 ones). This script runs them with ``AELAB_NOISE_LOG`` and
``AELAB_NOISE_MEASURE=1`` set, so every comparison is recorded and none is
asserted, once natively and once with oneDNN, MKL and ATen held to AVX2
kernels, and writes per tolerance key of ``tests/noise.py`` the largest
deviation seen on each instruction set, the tolerance, and the share of it
used (a tolerance is meant to be at least 4x the largest deviation).

On a CPU without AVX-512 both runs use the same kernels; the AVX-512 column
then says so (``same as AVX2``) and a bound for AVX-512 must come from a
machine that has it.

Usage::

    python benchmarks/noise_bound.py                # every numerics test, both instruction sets
    python benchmarks/noise_bound.py --smoke        # one test, natively: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import REPO, add_arguments, mode_of, table, write_results

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2"}  # fmt: skip
SMOKE_TEST = "tests/test_distributed.py::test_two_processes_match_one"


def _has_avx512() -> bool:
    try:
        return "avx512f" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def _measure(isa: str, tests: list[str], log: Path) -> list[dict]:
    """Run ``tests`` (pytest node ids or -m numerics) under ``isa``; the logged comparisons."""
    env = {k: v for k, v in os.environ.items() if k not in AVX2}
    if isa == "AVX2":
        env.update(AVX2)
    env.update(AELAB_NOISE_LOG=str(log), AELAB_NOISE_MEASURE="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    print(f"[{isa}] {' '.join(cmd[2:])}", flush=True)
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        raise SystemExit(f"error: the numerics tests failed under {isa} (exit {r.returncode})")
    if not log.exists():
        raise SystemExit(f"error: no comparison was logged under {isa}")
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p, "noise_bound")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO / "tests"))
    from noise import TOLERANCES

    tests = [SMOKE_TEST] if args.smoke else ["-m", "numerics", "tests"]
    isas = ["native"] if args.smoke else ["native", "AVX2"]
    native_is = "AVX-512" if _has_avx512() else "AVX2 (no AVX-512 here)"
    rows: dict[str, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for isa in isas:
            for rec in _measure(isa, tests, Path(tmp) / f"{isa}.jsonl"):
                best = rows.setdefault(rec["key"], {}).get(isa)
                if best is None or rec["share"] > best["share"]:
                    rows[rec["key"]][isa] = rec
    out_rows = []
    for key, tol in TOLERANCES.items():
        got = rows.get(key, {})
        cells = []
        for isa in ("native", "AVX2"):
            rec = got.get(isa)
            cells.append(
                "-" if rec is None else f"{rec['max_abs']:.2g} ({rec['test'].split('::')[-1]})"
            )
        share = max((r["share"] for r in got.values()), default=None)
        out_rows.append([key, f"rtol {tol.rtol:g}, atol {tol.atol:g}", *cells,
                         "-" if share is None else f"{share:.2f}"])  # fmt: skip
    columns = ["tolerance key", "tolerance", f"largest abs diff, native ({native_is})",
               "largest abs diff, AVX2 variables", "largest share of the tolerance"]  # fmt: skip
    for r in out_rows:
        print(" | ".join(r))
    write_results(args.out, "noise_bound", mode_of(args),
                  tables={"noise": table(columns, out_rows)},
                  data={"native_isa": native_is, "worst": rows})  # fmt: skip


if __name__ == "__main__":
    main()
