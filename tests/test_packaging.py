"""The licences ship: the project's, and the bundled data's beside the data, in the package."""

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_license_file_is_the_one_pyproject_names():
    assert PYPROJECT["project"]["license"] == {"text": "BSD-3-Clause"}
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License") and "the aelab authors" in text
    assert "LICENSE-fashion-mnist" in text


def test_every_bundled_file_and_its_licence_are_package_data():
    patterns = PYPROJECT["tool"]["setuptools"]["package-data"]["aelab"]
    bundled = ROOT / "src" / "aelab" / "data" / "_bundled"
    files = sorted(p.relative_to(ROOT / "src" / "aelab").as_posix() for p in bundled.iterdir())
    assert "data/_bundled/LICENSE-fashion-mnist" in files
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert missing == []
    licence = (bundled / "LICENSE-fashion-mnist").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Zalando SE" in licence
