"""Every benchmark runs (``--smoke``: seconds, bundled or synthetic data) and writes a whole
results file: its command, commit, versions, machine, date and figures.

Each script runs in a subprocess, as a user runs it, so imports inside its
functions and its results file are exercised, not only its ``--help``.
"""

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py") if not p.name.startswith("_"))
#: Smoke runs of 10 s or more on 2 cores (several fresh processes each): the full suite only.
SLOW = {"deep_clustering", "fewlabel_transfer", "kill_resume", "noise_bound", "stream_memory"}

sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import validate  # noqa: E402


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _params():
    for s in SCRIPTS:
        marks = [pytest.mark.slow] if s.stem in SLOW else []
        yield pytest.param(s, id=s.stem, marks=marks)


@pytest.mark.parametrize("script", list(_params()))
def test_benchmark_smoke_writes_a_whole_results_file(script, tmp_path):
    out = tmp_path / "r.json"
    r = _run([str(script), "--smoke", "--out", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    record = json.loads(out.read_text(encoding="utf-8"))
    assert validate(record) == []
    assert record["benchmark"] == script.stem and record["mode"] == "smoke"

    prov = record["provenance"]
    assert prov["command"].startswith(f"python benchmarks/{script.name} ")
    assert "--smoke" in prov["argv"]
    if (ROOT / ".git").exists():  # a source tree without git records null
        assert re.fullmatch(r"[0-9a-f]{40}", prov["commit"]) and isinstance(prov["dirty"], bool)
    when = dt.datetime.fromisoformat(prov["date"])
    assert abs((dt.datetime.now(dt.UTC) - when).total_seconds()) < 900
    assert prov["packages"]["aelab"] and prov["packages"]["numpy"]
    assert prov["packages"]["scikit-learn"]
    machine = prov["machine"]
    assert machine["cpus"] >= 1 and isinstance(machine["cpu_flags"], list)
    assert all(re.fullmatch(r"avx2|avx512\w*|amx\w*|fma|f16c", f) for f in machine["cpu_flags"])
    assert "OMP_NUM_THREADS" in machine["threads"] and machine["threads"]["OMP_NUM_THREADS"] == "1"
    # Nothing of this machine's folders: the command names the script inside the repository.
    assert str(tmp_path) not in prov["command"].split("--out")[0]

    assert record["tables"], "no figures"
    for name, t in record["tables"].items():
        assert t["rows"], f"table {name} is empty"
        cells = [c for row in t["rows"] for c in row[1:]]
        assert any(re.search(r"\d", c) for c in cells), f"table {name} has no figure"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_merge_never_overwrites_an_input_nor_names_a_file_outside_the_repository(tmp_path):
    script = str(ROOT / "benchmarks" / "anomaly_oneclass.py")
    committed = ROOT / "benchmarks" / "results_anomaly_oneclass.json"
    before = _sha(committed)

    r = _run([script, "--merge", str(committed), "--out", str(committed)], cwd=tmp_path)
    assert r.returncode == 2 and "one of the --merge inputs" in r.stderr
    assert _sha(committed) == before

    outside = tmp_path / "elsewhere.json"
    outside.write_bytes(committed.read_bytes())
    r = _run([script, "--merge", str(outside), "--out", str(tmp_path / "m.json")], cwd=tmp_path)
    assert r.returncode == 2 and "outside the repository" in r.stderr
    assert not (tmp_path / "m.json").exists()

    r = _run([script, "--merge", str(committed), "--out", str(tmp_path / "m.json")], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    merged = json.loads((tmp_path / "m.json").read_text(encoding="utf-8"))
    assert validate(merged) == []
    assert merged["inputs"] == ["benchmarks/results_anomaly_oneclass.json"]
    # The merge recomputes the table from the per-class results: the committed one.
    assert merged["tables"] == json.loads(committed.read_text(encoding="utf-8"))["tables"]
