"""Shared fixtures: small, easy, seeded image sets written as real files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch


def pytest_configure(config: pytest.Config) -> None:
    """Hide the Debian Fashion-MNIST package from every test, subprocesses included.

    The suite must give the same results on a fresh machine and on one with
    ``dataset-fashion-mnist`` installed, so every test reads the subset bundled
    with aelab (tests of the IDX reader write their own files).
    """
    os.environ["AELAB_FASHION_MNIST_DIR"] = tempfile.mkdtemp(prefix="aelab-no-fmnist-")


def make_shapes(n: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Three easy classes on a dark, noisy background: horizontal bar, vertical bar, square.

    Returns images of shape (n, size, size) uint8, labels (n,) and class names.
    """
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(n, size, size)).astype(np.uint8)
    labels = np.arange(n) % 3
    for i, k in enumerate(labels):
        a, b = rng.integers(1, size - 11, size=2)
        if k == 0:
            images[i, a : a + 3, b : b + 10] = 255
        elif k == 1:
            images[i, b : b + 10, a : a + 3] = 255
        else:
            images[i, a : a + 6, b : b + 6] = 255
    return images, labels, ["hbar", "vbar", "square"]


def invoke(*args: object):
    """Run the ``aelab`` CLI in this process (typer's CliRunner); every argument as text."""
    from typer.testing import CliRunner

    from aelab.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def one_line_error(r, *words: object) -> None:
    """Assert a CLI result is a refusal: exit 2, one ``error:`` line naming every word."""
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for w in words:
        assert str(w) in r.output, r.output


@pytest.fixture
def shapes_npz(tmp_path: Path) -> Path:
    """A labeled .npz of 180 16x16 grayscale images in 3 classes."""
    images, labels, names = make_shapes(180)
    path = tmp_path / "shapes.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(names))
    return path


@pytest.fixture
def shapes_test_npz(tmp_path: Path) -> Path:
    """60 more images of the same classes (a different seed), for prediction."""
    images, labels, names = make_shapes(60, seed=1)
    path = tmp_path / "shapes_test.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(names))
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train fastest on one thread, most of all on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
