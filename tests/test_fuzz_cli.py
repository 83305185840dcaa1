"""Property tests of the command line: random data and option values give exit 0 or a one-line
error with exit 2 (never a traceback), and a refused command leaves no file behind."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from aelab.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")

FUZZ = settings(
    max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip

_NUMBERS = st.one_of(
    st.integers(-5, 5).map(str), st.sampled_from(["0", "1", "2", "1e9", "-1", "nan", "inf", "-inf"]),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
    st.text("abc-=.:", max_size=4),
)  # fmt: skip


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _check(result, out: Path) -> None:
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(("error:", "Usage", "Error")), result.output
        assert not _files(out), _files(out)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A labelled .npz of 40 16x16 images and a convae_tiny checkpoint fine-tuned on it."""
    from aelab.tasks import run_finetune
    from conftest import make_shapes

    root = tmp_path_factory.mktemp("fuzz")
    images, labels, names = make_shapes(40)
    np.savez(root / "d.npz", images=images, labels=labels, class_names=np.array(names))
    run_finetune(root / "d.npz", root / "run", model="convae_tiny", recipe="plain", epochs=1,
                 batch_size=8, device="cpu", progress=False)  # fmt: skip
    return root


@FUZZ
@given(
    opts=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "--epochs",
                    "--batch-size",
                    "--lr",
                    "--val-fraction",
                    "--max-images",
                    "--mask-ratio",
                    "--loss",
                    "--augment",
                    "--model",
                ]
            ),
            _NUMBERS,
        ),
        max_size=3,
        unique_by=lambda t: t[0],
    ),  # fmt: skip
    extra=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "warmup_epochs",
                    "weight_decay",
                    "grad_clip",
                    "ema_decay",
                    "mask_patch",
                    "nonsense",
                ]
            ),
            _NUMBERS,
        ),
        max_size=2,
        unique_by=lambda t: t[0],
    ),  # fmt: skip
)
def test_pretrain_options(tiny, opts, extra):
    out = Path(tempfile.mkdtemp(dir=tiny))
    args = ["pretrain", str(tiny / "d.npz"), "--out", str(out), "--device", "cpu", "--epochs", "1",
            "--model", "convae_tiny", "--batch-size", "16"]  # fmt: skip
    for flag, value in opts:
        if flag == "--epochs" and value not in ("-1", "0", "nan", "abc"):
            value = "1"  # keep a run that starts short
        args += [flag, value]
    for key, value in extra:
        args += ["--set", f"{key}={value}"]
    _check(runner.invoke(app, args), out)
    shutil.rmtree(out, ignore_errors=True)


@FUZZ
@given(
    data=st.one_of(
        st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=0, max_size=3),
                 min_size=0, max_size=6),
        st.just([[1.0, 2.0]] * 5),
    ),
    k=_NUMBERS, alpha=_NUMBERS, sweep=st.sampled_from([None, "0.1x,1x", "", ",", "3y", "-1"]),
    ratio=st.sampled_from([None, "2:1", "2:0", "a:b", "1:1:1:1:1:1"]),
)  # fmt: skip
def test_cluster_options(tiny, data, k, alpha, sweep, ratio):
    root = Path(tempfile.mkdtemp(dir=tiny))
    try:
        arr = np.array(data, dtype=np.float64)
    except ValueError:  # ragged rows: save them as an object-free 1-d array of lengths
        arr = np.array([len(r) for r in data], dtype=np.float64)
    np.save(root / "f.npy", arr)
    out = root / "out"
    args = [
        "cluster",
        str(root / "f.npy"),
        "--k",
        k,
        "--alpha",
        alpha,
        "--out",
        str(out),
        "--n-init",
        "1",
    ]
    if sweep is not None:
        args += ["--alpha-sweep", sweep]
    if ratio is not None:
        args += ["--target-ratio", ratio]
    _check(runner.invoke(app, args), out)
    shutil.rmtree(root, ignore_errors=True)


@FUZZ
@given(
    labels=st.lists(st.integers(-3, 120), min_size=0, max_size=12),
    command=st.sampled_from(["evaluate", "predict"]),
)
def test_labels_against_a_checkpoint(tiny, labels, command):
    root = Path(tempfile.mkdtemp(dir=tiny))
    n = max(1, len(labels))
    images = np.random.default_rng(0).integers(0, 255, size=(n, 16, 16), dtype=np.uint8)
    np.savez(root / "x.npz", images=images, labels=np.array(labels or [0], dtype=np.int64))
    out = root / "out" / ("m.json" if command == "evaluate" else "p.csv")
    r = runner.invoke(app, [command, str(root / "x.npz"), "--ckpt", str(tiny / "run" / "finetune"),
                            "--out", str(out), "--device", "cpu"])  # fmt: skip
    _check(r, out.parent)
    if r.exit_code == 0 and command == "evaluate":
        assert max(labels or [0]) < 3  # the checkpoint's three classes
    shutil.rmtree(root, ignore_errors=True)
