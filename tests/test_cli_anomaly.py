"""``aelab anomaly fit | score | eval`` end to end on a tiny labeled .npz."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from aelab.cli.main import app
from aelab.data import load_dataset, select_classes

runner = CliRunner()


# Tiny models train fastest on one thread (conftest's one_torch_thread), for every test here.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """160 sneakers and 40 each of trousers and bags, with class names."""
    ds = load_dataset("fashion-mnist:train", progress=False)
    sub = select_classes(ds, [7, 1, 8], counts=[160, 40, 40], seed=0)
    path = tmp_path_factory.mktemp("data") / "fm.npz"
    np.savez(
        path,
        images=sub.images[:, 0].numpy(),
        labels=sub.labels.numpy(),
        class_names=np.asarray(ds.class_names),
    )
    return path


@pytest.fixture(scope="module")
def detector(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "det"
    res = runner.invoke(
        app,
        ["anomaly", "fit", str(npz), "--out", str(out), "--normal-class", "Sneaker",
         "--model", "convae_tiny", "--epochs", "4", "--set", "batch_size=32", "--set", "lr=3e-3",
         "--set", "score=mse+latent", "--device", "cpu",
         # 4 epochs as written (20 steps), not the default floor of 600 steps
         "--set", "min_steps=0"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    # 10 % of the 160 sneakers is 16, too few to place fpr:0.05 (19 needed): 19 are held out.
    assert "trained on 141 normal images" in res.output
    assert "set on 19 held-out normal images" in res.output
    assert "note: 16 held-out normal images (calibration_fraction) were too few" in res.output
    assert "score mse+latent\n" in res.output  # the score used is printed
    return out


def test_fit_writes_a_loadable_detector(detector):
    assert (detector / "detector.json").is_file()
    assert (detector / "model" / "model.json").is_file()
    meta = json.loads((detector / "detector.json").read_text())
    assert meta["params"]["score"] == "mse+latent"


def test_score_writes_csv(npz, detector, tmp_path):
    out = tmp_path / "scores.csv"
    res = runner.invoke(
        app, ["anomaly", "score", str(npz), "--detector", str(detector), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 240 and list(rows[0]) == ["id", "score", "is_anomaly"]
    flags = np.array([int(r["is_anomaly"]) for r in rows])
    labels = np.load(npz)["labels"]
    # Trousers and bags are flagged far more often than sneakers.
    assert flags[labels != 7].mean() > flags[labels == 7].mean() + 0.3


def test_eval_prints_losses_and_writes_figures(npz, detector, tmp_path):
    out = tmp_path / "eval"
    res = runner.invoke(
        app,
        ["anomaly", "eval", "--detector", str(detector), "--normal", str(npz),
         "--anomalous", str(npz), "--normal-class", "Sneaker", "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "mean reconstruction loss (MSE): normal" in res.output
    assert "ROC AUC" in res.output
    assert "ROC AUC of each part: mse" in res.output
    for name in ("metrics.json", "roc.png", "histogram.png", "most_anomalous.png",
                 "least_anomalous.png"):  # fmt: skip
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["n_normal"] == 160 and m["n_anomalous"] == 80 and m["roc_auc"] > 0.8


def test_eval_anomalous_class_option(npz, detector, tmp_path):
    res = runner.invoke(
        app,
        ["anomaly", "eval", "--detector", str(detector), "--normal", str(npz),
         "--anomalous", str(npz), "--normal-class", "7", "--anomalous-class", "Bag",
         "--out", str(tmp_path / "e")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["n_anomalous"] == 40


def test_bad_detector_dir_is_one_line_error(npz, tmp_path):
    (tmp_path / "det").mkdir()
    res = runner.invoke(
        app,
        ["anomaly", "score", str(npz), "--detector", str(tmp_path / "det"), "--out", str(tmp_path / "s.csv")],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "not a detector folder" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "s.csv").exists()


def test_fit_with_no_normal_images_fails_clearly(npz, tmp_path):
    res = runner.invoke(
        app,
        ["anomaly", "fit", str(npz), "--out", str(tmp_path / "d"), "--normal-class", "Coat",
         "--model", "convae_tiny", "--epochs", "1"],
    )  # fmt: skip
    assert res.exit_code == 2
    assert "no normal images" in res.output
    res = runner.invoke(
        app, ["anomaly", "fit", str(npz), "--out", str(tmp_path / "d"), "--normal-class", "Cat"]
    )
    assert res.exit_code == 2 and "unknown class" in res.output
