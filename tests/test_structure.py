"""The shape of the code base: layers (import-linter), private names, file and function sizes."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "aelab"


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def test_layers_hold():
    """`lint-imports` (the contracts in pyproject.toml) passes: no import goes up a layer."""
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.is_file():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    res = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "broken" in res.stdout and ", 0 broken" in res.stdout


def _package(module: str) -> str:
    """The aelab package a module belongs to (``aelab.training.loop`` -> ``aelab.training``)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_another_packages_private_names():
    offences = []
    for name, path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                not isinstance(node, ast.ImportFrom)
                or not node.module
                or not node.module.startswith("aelab")
            ):
                continue
            if _package(node.module) == _package(name):
                continue  # a package's own private names are its business
            hidden = [
                a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")
            ]
            private_module = any(p.startswith("_") for p in node.module.split(".")[1:])
            if hidden or private_module:
                offences.append(
                    f"{path.relative_to(ROOT)}:{node.lineno} from {node.module} import {hidden or '...'}"
                )
    assert not offences, "\n".join(offences)


def test_pipeline_is_a_deprecated_shim_over_tasks():
    import importlib
    import sys

    sys.modules.pop("aelab.pipeline", None)
    with pytest.warns(DeprecationWarning, match="aelab.tasks"):
        pipeline = importlib.import_module("aelab.pipeline")
    import aelab.tasks

    assert pipeline.run_finetune is aelab.tasks.run_finetune


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's code: from its first statement after the docstring to its end."""
    body = fn.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(getattr(body[0], "value", None), ast.Constant)
    ):
        body = body[1:]
    return 0 if not body else fn.end_lineno - body[0].lineno + 1  # type: ignore[operator]


def _long_functions(tree: ast.AST, where: str) -> list[str]:
    """Public functions (and methods) of ``tree`` with 60 or more lines of code."""
    out: list[str] = []

    def walk(node: ast.AST, prefix: str, private: bool) -> None:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, ast.FunctionDef | ast.AsyncFunctionDef):
                hidden = private or (ch.name.startswith("_") and not ch.name.endswith("__"))
                if not hidden and _body_lines(ch) >= 60:
                    out.append(f"{where}:{ch.lineno} {prefix}{ch.name}: {_body_lines(ch)} lines")
                walk(ch, f"{prefix}{ch.name}.", True)
            elif isinstance(ch, ast.ClassDef):
                walk(ch, f"{prefix}{ch.name}.", private or ch.name.startswith("_"))

    walk(tree, "", False)
    return out


def test_files_and_public_functions_stay_small():
    """No source file over 600 lines; no public function with 60 or more lines of code
    (signature and docstring not counted)."""
    long_one = 'def f():\n    """Doc."""\n' + "    x = 1\n" * 60
    assert _long_functions(ast.parse(long_one), "t") == ["t:1 f: 60 lines"]  # the check bites
    assert _long_functions(ast.parse(long_one.replace("def f", "def _f")), "t") == []
    too_long = []
    for _, path in _modules():
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        if len(text.splitlines()) > 600:
            too_long.append(f"{where}: {len(text.splitlines())} lines")
        too_long += _long_functions(ast.parse(text), where)
    assert not too_long, "\n".join(too_long)
