"""Property tests of the command line: each drawn input gets the exit code it must get, 0 for
settings the command accepts and 2 (one line, no file left behind) for any it must refuse, never
a traceback. The rules that decide are written here, independently of the code under test."""

from __future__ import annotations

import math
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


def _number(text: str) -> float | None:
    """``text`` as a float, or ``None`` when it is not one."""
    try:
        return float(text)
    except ValueError:
        return None


def _integer(text: str) -> int | None:
    """``text`` as an integer the way the command line reads one (no ``1.0``), or ``None``."""
    try:
        return int(text)
    except ValueError:
        return None


def _positive(text: str) -> bool:
    v = _number(text)
    return v is not None and math.isfinite(v) and v > 0


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _check(result, out: Path, expected: int) -> None:
    """``result`` ended with ``expected``: 0, or 2 with one line and nothing written in ``out``."""
    assert result.exit_code == expected, (expected, result.exit_code, result.output,
                                          result.exception)  # fmt: skip
    assert "Traceback" not in result.output, result.output
    if expected == 2:
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
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


def _judged(accepted, refused):
    """``(value, accepted?)`` pairs: values an option takes and values it must refuse.

    Accepted values are drawn twice as often, so that about half the examples have only
    accepted settings and must run to the end (13 of the 25 pre-training examples).
    """
    # (sampled_from, not one_of: hypothesis flattens nested one_of into equal branches)
    return st.sampled_from([True, True, False]).flatmap(
        lambda ok: (accepted if ok else refused).map(lambda v: (v, ok))
    )


_JUNK = st.text("abc-=.:", max_size=4).filter(lambda t: _number(t) is None)
#: Values any numeric option must refuse: not a number, or not finite.
_NOT_FINITE = st.one_of(_JUNK, st.sampled_from(["nan", "inf", "-inf", "NaN"]))


def _floats(lo: float, hi: float) -> st.SearchStrategy[str]:
    return st.floats(lo, hi, allow_nan=False).map(repr)


#: Pre-training flags and --set keys: values accepted (a one-epoch run on 40 images must then
#: finish; the data-dependent limits are kept out: at least 8 images and at most half held
#: out always leave two to train on) and values refused whatever the other settings are.
_PRETRAIN_FLAGS = {
    "--epochs": _judged(st.just("1"), st.one_of(_NOT_FINITE, st.sampled_from(["0", "-1", "1.5"]))),
    "--batch-size": _judged(st.sampled_from(["2", "3", "16", "1000"]),
                            st.one_of(_NOT_FINITE, st.sampled_from(["1", "0", "-2", "2.5"]))),
    "--lr": _judged(_floats(1e-5, 1e-2),
                    st.one_of(_NOT_FINITE, st.sampled_from(["0", "-0.001"]), _floats(-1e3, 0))),
    "--val-fraction": _judged(_floats(0.0, 0.5),
                              st.one_of(_NOT_FINITE, _floats(1.0, 1e3), _floats(-1e3, -1e-3))),
    "--max-images": _judged(st.sampled_from(["0", "8", "40", "1000"]),
                            st.one_of(_NOT_FINITE, st.sampled_from(["-1", "1", "2.5"]))),
    "--mask-ratio": _judged(_floats(0.0, 0.9),
                            st.one_of(_NOT_FINITE, _floats(1.0, 1e3), _floats(-1e3, -1e-3))),
    "--loss": _judged(st.sampled_from(["mse", "l1", "bce"]),
                      st.one_of(_JUNK, st.sampled_from(["MSE", "1", "l2"]))),
    "--augment": _judged(st.sampled_from(["none", "weak", "standard"]),
                         st.one_of(_JUNK, st.sampled_from(["strong", "0"]))),
    "--model": _judged(st.sampled_from(["convae_tiny"]),
                       st.one_of(_JUNK, st.sampled_from(["convae_nope", "1"]))),
}  # fmt: skip
_PRETRAIN_SETS = {
    "warmup_epochs": _judged(st.sampled_from(["0", "0.5", "3"]),
                             st.one_of(_NOT_FINITE, st.sampled_from(["-1", "-0.5"]))),
    "weight_decay": _judged(st.sampled_from(["0", "0.05", "1"]),
                            st.one_of(_NOT_FINITE, st.sampled_from(["-1", "-1e-9"]))),
    "grad_clip": _judged(st.sampled_from(["none", "1", "0.5"]),
                         st.one_of(_NOT_FINITE, st.sampled_from(["0", "-1"]))),
    "ema_decay": _judged(st.sampled_from(["0", "0.9", "0.999"]),
                         st.one_of(_NOT_FINITE, st.sampled_from(["1", "-0.1", "2"]))),
    "mask_patch": _judged(st.sampled_from(["1", "2", "4"]),
                          st.one_of(_NOT_FINITE, st.sampled_from(["0", "-1", "1.5"]))),
}  # fmt: skip


def _settings(table: dict, most: int) -> st.SearchStrategy[list[tuple[str, str, bool]]]:
    """Up to ``most`` distinct keys of ``table``, each with a judged value."""
    keys = st.lists(st.sampled_from(sorted(table)), max_size=most, unique=True)
    return keys.flatmap(
        lambda ks: st.tuples(*(table[k] for k in ks)).map(
            lambda vs: [(k, v, ok) for k, (v, ok) in zip(ks, vs, strict=True)]
        )
    )


@FUZZ
@given(
    opts=_settings(_PRETRAIN_FLAGS, 3), extra=_settings(_PRETRAIN_SETS, 2),
    unknown=st.sampled_from([False] * 4 + [True]).flatmap(  # --set nonsense=...
        lambda given: _NUMBERS if given else st.none()
    ),
)  # fmt: skip
def test_pretrain_options(tiny, opts, extra, unknown):
    out = Path(tempfile.mkdtemp(dir=tiny))
    args = ["pretrain", str(tiny / "d.npz"), "--out", str(out), "--device", "cpu", "--epochs", "1",
            "--model", "convae_tiny", "--batch-size", "16"]  # fmt: skip
    args += [a for flag, value, _ in opts for a in (flag, value)]
    args += [a for key, value, _ in extra for a in ("--set", f"{key}={value}")]
    args += [] if unknown is None else ["--set", f"nonsense={unknown}"]  # refused: no such key
    ok = all(accepted for *_, accepted in opts + extra) and unknown is None
    r = runner.invoke(app, args)
    _check(r, out, 0 if ok else 2)
    if ok:
        assert (out / "pretrain" / "model.safetensors").is_file()
    shutil.rmtree(out, ignore_errors=True)


def _features(data: list[list[float]]) -> tuple[np.ndarray, int | None]:
    """The array the cluster test saves, and its number of rows when it is a valid feature matrix
    (2-D, at least one row and one column, every value finite), else ``None``."""
    try:
        arr = np.array(data, dtype=np.float64)
    except ValueError:  # ragged rows: save them as an object-free 1-d array of lengths
        arr = np.array([len(r) for r in data], dtype=np.float64)
    valid = arr.ndim == 2 and arr.size > 0 and bool(np.isfinite(arr).all())
    return arr, arr.shape[0] if valid else None


def _often(likely, other):
    """``likely`` three times in four, else ``other`` (so that many examples are accepted)."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda a: likely if a else other)


_RATIOS = {None: None, "2:1": 2, "2:0": None, "a:b": None, "1:1:1:1:1:1": 6}
_SWEEPS = {None: True, "0.1x,1x": True, "0.5,2": True, "": False, ",": False, "3y": False,
           "-1": False}  # fmt: skip


@FUZZ
@given(
    data=_often(
        st.integers(1, 6).flatmap(lambda d: st.lists(
            st.lists(st.floats(-1e6, 1e6), min_size=d, max_size=d), min_size=1, max_size=6)),
        st.one_of(
            st.lists(st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf])),
                              min_size=0, max_size=3), min_size=0, max_size=6),
            st.just([[1.0, 2.0]] * 5),
        ),
    ),
    k=_often(st.integers(1, 6).map(str), _NUMBERS),
    alpha=_often(st.one_of(st.none(), st.floats(1e-3, 1e3).map(repr)), _NUMBERS),
    sweep=_often(st.none(), st.sampled_from(list(_SWEEPS))),
    ratio=_often(st.none(), st.sampled_from(list(_RATIOS))),
)  # fmt: skip
def test_cluster_options(tiny, data, k, alpha, sweep, ratio):
    root = Path(tempfile.mkdtemp(dir=tiny))
    arr, n = _features(data)
    np.save(root / "f.npy", arr)
    out = root / "out"
    args = ["cluster", str(root / "f.npy"), "--k", k, "--out", str(out), "--n-init", "1"]
    args += [] if alpha is None else ["--alpha", alpha]
    args += [] if sweep is None else ["--alpha-sweep", sweep]
    args += [] if ratio is None else ["--target-ratio", ratio]
    # k a whole number in [1, n]; alpha positive and finite; the sweep well formed; a target
    # ratio of one positive part per cluster, and then no alpha (the search chooses it).
    kk = _integer(k)
    ok = n is not None and kk is not None and 1 <= kk <= n
    ok = ok and (alpha is None or _positive(alpha)) and _SWEEPS[sweep]
    ok = ok and (ratio is None or (_RATIOS[ratio] == kk and alpha is None))
    r = runner.invoke(app, args)
    _check(r, out, 0 if ok else 2)
    if ok:
        assert (out / "labels.csv").is_file()
    shutil.rmtree(root, ignore_errors=True)


@FUZZ
@given(
    labels=st.lists(_often(st.integers(0, 4), st.integers(-3, 120)), min_size=0, max_size=12),
    command=st.sampled_from(["evaluate", "predict"]),
)
def test_labels_against_a_checkpoint(tiny, labels, command):
    root = Path(tempfile.mkdtemp(dir=tiny))
    labels = labels or [0]
    images = np.random.default_rng(0).integers(0, 255, size=(len(labels), 16, 16), dtype=np.uint8)
    np.savez(root / "x.npz", images=images, labels=np.array(labels, dtype=np.int64))
    out = root / "out" / ("m.json" if command == "evaluate" else "p.csv")
    r = runner.invoke(app, [command, str(root / "x.npz"), "--ckpt", str(tiny / "run" / "finetune"),
                            "--out", str(out), "--device", "cpu"])  # fmt: skip
    # Loading: labels are not negative and, without class names, at least half of the classes
    # 0..max occur. Evaluating: every label is one of the checkpoint's three classes.
    ok = min(labels) >= 0 and max(labels) + 1 <= 2 * len(set(labels))
    ok = ok and (command == "predict" or max(labels) < 3)
    _check(r, out.parent, 0 if ok else 2)
    if ok:
        assert out.is_file()
    shutil.rmtree(root, ignore_errors=True)
