"""The measured tables of the README are the committed results files, rendered."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


render_tables = _load("render_tables", ROOT / "scripts" / "render_tables.py")
_results = sys.modules["_results"]  # render_tables put benchmarks/ on the path


def _copy(tmp_path: Path) -> Path:
    """The README and every committed results file, in a folder of their own."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    for f in (ROOT / "benchmarks").glob("results_*.json"):
        shutil.copy(f, tmp_path / "benchmarks" / f.name)
    return tmp_path


def test_readme_tables_agree_with_the_results_files():
    assert render_tables.main(["--check"]) == 0


def test_every_committed_results_file_carries_its_provenance():
    files = sorted((ROOT / "benchmarks").glob("results_*.json"))
    assert files
    for f in files:
        record = json.loads(f.read_text(encoding="utf-8"))
        assert _results.validate(record) == [], f.name
        prov = record["provenance"]
        # Unknown is said, never invented: without a commit, the file says why.
        if prov["commit"] is None:
            assert prov.get("legacy") and prov.get("note"), f.name
        # No path of one machine: nothing outside the repository is named.
        text = f.read_text(encoding="utf-8")
        assert "/work/" not in text and "/tmp/" not in text and "/home/" not in text, f.name


def test_every_marked_table_is_rendered_with_where_it_comes_from():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    marks = list(render_tables.MARKER.finditer(text))
    assert len(marks) >= 8
    for m in marks:
        assert f"`benchmarks/results_{m['bench']}.json`" in m["body"]
        assert m["body"].lstrip().startswith("|")


def test_check_fails_when_a_figure_differs(tmp_path, capsys):
    root = _copy(tmp_path)
    assert render_tables.main(["--check", "--root", str(root)]) == 0
    path = root / "benchmarks" / "results_anomaly_oneclass.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["tables"]["auroc"]["rows"][0][1] = "**99.9 ± 0.1**"
    path.write_text(json.dumps(record), encoding="utf-8")
    assert render_tables.main(["--check", "--root", str(root)]) == 1
    assert "anomaly_oneclass/auroc" in capsys.readouterr().err
    # Rendering writes the new figure into the page, after which the check passes again.
    assert render_tables.main(["--root", str(root)]) == 0
    assert "**99.9 ± 0.1**" in (root / "README.md").read_text(encoding="utf-8")
    assert render_tables.main(["--check", "--root", str(root)]) == 0


def test_check_fails_when_the_page_was_edited_by_hand(tmp_path):
    root = _copy(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace("94.7 ± 0.1", "95.7 ± 0.1"),
                      encoding="utf-8")  # fmt: skip
    assert render_tables.main(["--check", "--root", str(root)]) == 1


def test_a_results_file_without_provenance_is_refused(tmp_path):
    root = _copy(tmp_path)
    path = root / "benchmarks" / "results_anomaly_oneclass.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    del record["provenance"]["commit"]
    path.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ValueError, match="provenance has no 'commit'"):
        render_tables.main(["--check", "--root", str(root)])


def test_a_new_results_file_renders_its_commit_machine_and_versions(tmp_path):
    out = _results.write_results(
        tmp_path / "r.json", "demo", "quick",
        tables={"t": _results.table(["a", "b"], [["1", "**2**"]])},
    )  # fmt: skip
    record = _results.load_results(out)
    prov = record["provenance"]
    assert prov["packages"]["numpy"] and prov["machine"]["cpus"] >= 1
    assert prov["date"][:2] == "20" and isinstance(prov["machine"]["cpu_flags"], list)
    line = render_tables.provenance_line("demo", record)
    assert "(quick run)" in line and "cores" in line and "numpy" in line
    if prov["commit"] is not None:  # a source tree without git records None
        assert prov["commit"][:10] in line
    assert (
        render_tables.markdown_table(record["tables"]["t"]) == "| a | b |\n|---|---|\n| 1 | **2** |"
    )
