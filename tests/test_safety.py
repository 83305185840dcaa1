"""The cases of issue #14 a hostile but realistic user tried, through the real CLI: outputs that
would clobber, labels out of range, non-finite options, file names that break CSVs or run as
spreadsheet formulas, and inputs that used to end in a traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from aelab.files import read_csv
from conftest import invoke
from conftest import one_line_error as _one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Data with 3 classes, a fine-tuned checkpoint and a detector, all tiny."""
    from conftest import make_shapes

    root = tmp_path_factory.mktemp("safety")
    images, labels, names = make_shapes(90)
    np.savez(root / "d.npz", images=images, labels=labels, class_names=np.array(names))
    r = invoke("finetune", root / "d.npz", "--out", root / "R", "--set", "model=convae_tiny",
               "--recipe", "plain", "--epochs", "1", "--set", "batch_size=8", "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
    # One epoch as written, not the default floor of 600 steps: the tests only need a detector.
    r = invoke("anomaly", "fit", root / "d.npz", "--normal-class", "0", "--out", root / "DET",
               "--model", "convae_tiny", "--epochs", "1", "--set", "batch_size=8", "--device", "cpu",
               "--set", "min_steps=0")  # fmt: skip
    assert r.exit_code == 0, r.output
    return root


@pytest.mark.slow
def test_predict_never_writes_over_its_checkpoint_or_its_input(run):
    ckpt = run / "R" / "finetune"
    before = (ckpt / "model.safetensors").read_bytes()
    for out in (ckpt / "model.safetensors", run / "d.npz"):
        r = invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", out, "--overwrite")
        _one_line_error(r, str(out))
    r = invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", ckpt / "preds.csv")
    _one_line_error(r, "inside the checkpoint folder")
    assert (ckpt / "model.safetensors").read_bytes() == before
    assert np.load(run / "d.npz")["images"].shape == (90, 16, 16)


def test_existing_outputs_need_overwrite(run, tmp_path):
    ckpt = run / "R" / "finetune"
    sub = tmp_path / "sub.csv"
    assert invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", sub).exit_code == 0
    _one_line_error(invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", sub), "--overwrite")
    assert (
        invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", sub, "--overwrite").exit_code == 0
    )
    # a folder where a file is asked for, and a file where a folder is
    _one_line_error(
        invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", tmp_path), "is a folder"
    )
    feats = tmp_path / "f.npy"
    np.save(feats, np.random.default_rng(0).normal(size=(30, 2)))
    out = tmp_path / "clusters"
    assert invoke("cluster", feats, "--k", "2", "--out", out).exit_code == 0
    labels = (out / "labels.csv").read_text()
    _one_line_error(invoke("cluster", feats, "--k", "3", "--out", out), "labels.csv", "--overwrite")
    assert (out / "labels.csv").read_text() == labels
    _one_line_error(invoke("cluster", feats, "--k", "2", "--out", sub), "is a file")
    # the detector: refused, then replaced with --overwrite
    det = run / "DET" / "detector.json"
    before = det.read_text()
    args = ["anomaly", "fit", run / "d.npz", "--normal-class", "1", "--out", run / "DET",
            "--model", "convae_tiny", "--epochs", "1", "--set", "batch_size=8", "--device", "cpu"]  # fmt: skip
    _one_line_error(invoke(*args), "detector.json", "--overwrite")
    assert det.read_text() == before


def test_labels_out_of_range_are_refused(run, tmp_path):
    images = np.load(run / "d.npz")["images"]
    labels = np.arange(90) % 3
    labels[5] = 99  # one stray label among 0-2, no class names
    np.savez(tmp_path / "bad.npz", images=images, labels=labels)
    r = invoke("finetune", tmp_path / "bad.npz", "--out", tmp_path / "R", "--set", "model=convae_tiny",
               "--epochs", "1", "--device", "cpu")  # fmt: skip
    _one_line_error(r, "99")
    assert not (tmp_path / "R").exists()
    # labels the checkpoint does not know: refused, no NaN rows, no bare NaN in a JSON file
    labels = np.arange(90) % 4
    np.savez(tmp_path / "four.npz", images=images, labels=labels)
    out = tmp_path / "eval.json"
    r = invoke("evaluate", tmp_path / "four.npz", "--ckpt", run / "R" / "finetune", "--out", out)
    _one_line_error(r, "label 3 is out of range", "3 classes")
    assert not out.exists()
    # a class without images gives null, never NaN, in valid JSON
    np.savez(tmp_path / "two.npz", images=images[:60], labels=np.arange(60) % 2)
    r = invoke("evaluate", tmp_path / "two.npz", "--ckpt", run / "R" / "finetune", "--out", out)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "NaN" not in text
    assert json.loads(text)["per_class_accuracy"][2] is None


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "threshold=nan"], ["threshold"]),
        (["--set", "threshold=fpr:inf"], ["threshold"]),
        (["--set", "lr=inf"], ["finite"]),
        (["--set", "calibration_fraction=nan"], ["calibration_fraction"]),
    ],
)
def test_non_finite_options_are_refused(run, tmp_path, args, words):
    out = tmp_path / "det"
    r = invoke("anomaly", "fit", run / "d.npz", "--out", out, "--model", "convae_tiny",
               "--epochs", "1", "--device", "cpu", *args)  # fmt: skip
    _one_line_error(r, *words)
    assert not out.exists()


def _odd_folder(root):
    names = ["plain", "a\rb", "=cmd|' -C calc'!A0", "+1", "-2", "@SUM(1)", 'q"uote', "c,d"]
    rng = np.random.default_rng(0)
    for k in range(2):
        (root / f"k{k}").mkdir(parents=True)
        for n in names:
            Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(
                root / f"k{k}" / f"{n}{k}.png"
            )
    return sorted(f"{n}{k}" for k in range(2) for n in names)


def test_csv_cells_round_trip_and_never_run_as_formulas(run, tmp_path):
    expected = _odd_folder(tmp_path / "imgs")
    out = tmp_path / "p.csv"
    r = invoke("predict", tmp_path / "imgs", "--ckpt", run / "R" / "finetune", "--out", out)
    assert r.exit_code == 0, r.output
    header, rows = read_csv(out)
    assert header == ["id", "label"] and sorted(row[0] for row in rows) == expected
    raw = out.read_text()
    for line in raw.splitlines()[1:]:
        assert not line.startswith(("=", "+", "-", "@")), line  # guarded with a quote
    scores = tmp_path / "s.csv"
    r = invoke("anomaly", "score", tmp_path / "imgs", "--detector", run / "DET", "--out", scores)
    assert r.exit_code == 0, r.output
    header, rows = read_csv(scores)
    assert header == ["id", "score", "is_anomaly"] and sorted(row[0] for row in rows) == expected
    assert all(np.isfinite(float(row[1])) for row in rows)


def test_inputs_that_used_to_raise_tracebacks(run, tmp_path):
    import shutil

    ckpt = tmp_path / "huge"
    shutil.copytree(run / "R" / "finetune", ckpt)
    meta = json.loads((ckpt / "model.json").read_text())
    meta["config"]["widths"] = [8, 16, 500000]
    meta["config"]["image_size"] = 1024
    (ckpt / "model.json").write_text(json.dumps(meta))
    r = invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", tmp_path / "p.csv")
    _one_line_error(r, "model.json")
    (tmp_path / "R2").mkdir()
    (tmp_path / "R2" / "pretrain").write_text("not a folder")
    r = invoke("pretrain", run / "d.npz", "--out", tmp_path / "R2", "--model", "convae_tiny",
               "--epochs", "1", "--device", "cpu")  # fmt: skip
    _one_line_error(r, "pretrain")


def test_finetune_never_writes_into_its_init_checkpoint(run, tmp_path):
    init = run / "R" / "finetune"
    r = invoke("finetune", run / "d.npz", "--init", init, "--out", init, "--name", "again",
               "--epochs", "1", "--device", "cpu")  # fmt: skip
    _one_line_error(r, "inside the checkpoint folder")
    assert not (init / "again").exists()
