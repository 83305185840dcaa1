"""The learning commands end to end on a tiny labeled set, through the real CLI."""

import csv
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aelab.cli.main import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import make_shapes

    tmp = tmp_path_factory.mktemp("learn")
    images, labels, names = make_shapes(180)
    shapes_npz = tmp / "shapes.npz"
    np.savez(shapes_npz, images=images, labels=labels, class_names=np.array(names))
    run = tmp / "run"
    conf = tmp / "finetune.toml"  # the settings of the old flags, as a --config file
    conf.write_text('val_per_class = 10\nbatch_size = 16\nlr = 3e-3\nencoder_lr_mult = 1\n'
                    'augment = "none"\nseed = 0\n')
    r = invoke("pretrain", shapes_npz, "--out", run, "--model", "convae_tiny", "--epochs", "3",
               "--set", "batch_size=32", "--set", "seed=0")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("finetune", shapes_npz, "--init", run / "pretrain", "--out", run, "--labels-per-class", "30",
               "--epochs", "12", "--config", conf, "--set", "min_epoch_steps=0")  # fmt: skip
    assert r.exit_code == 0, r.output
    return run


def test_pretrain_finetune_predict_evaluate(trained, tmp_path, shapes_test_npz):
    pre = trained / "pretrain"
    for name in ("model.safetensors", "model.json", "metrics.csv", "run.json"):
        assert (pre / name).is_file()
    rows = list(csv.DictReader((pre / "metrics.csv").open()))
    losses = [float(r["train_loss"]) for r in rows]
    assert len(losses) == 3 and losses[-1] < losses[0]

    sub = tmp_path / "submission.csv"
    r = invoke("predict", shapes_test_npz, "--ckpt", trained / "finetune", "--out", sub)
    assert r.exit_code == 0, r.output
    assert "60 rows" in r.output
    rows = list(csv.reader(sub.open()))
    assert rows[0] == ["id", "label"] and len(rows) == 61
    assert [row[0] for row in rows[1:]] == [str(i) for i in range(60)]  # input order
    assert {row[1] for row in rows[1:]} <= {"hbar", "vbar", "square"}

    out = tmp_path / "eval.json"
    r = invoke("evaluate", shapes_test_npz, "--ckpt", trained / "finetune", "--out", out)
    assert r.exit_code == 0, r.output
    res = json.loads(out.read_text())
    assert res["accuracy"] > 0.6  # chance is 1/3
    assert np.array(res["confusion_matrix"]).sum() == 60


def test_predict_probabilities_and_margin(trained, tmp_path, shapes_test_npz):
    plain, full = tmp_path / "plain.csv", tmp_path / "probs.csv"
    assert invoke("predict", shapes_test_npz, "--ckpt", trained / "finetune",
                  "--out", plain).exit_code == 0  # fmt: skip
    r = invoke("predict", shapes_test_npz, "--ckpt", trained / "finetune", "--out", full,
               "--probabilities")  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(full.open()))
    assert list(rows[0]) == ["id", "label", "p_hbar", "p_vbar", "p_square", "margin"]
    # The same labels as without probabilities: the most probable class, its margin the gap
    # to the second; the probabilities of a row sum to 1.
    assert [r["label"] for r in rows] == [r["label"] for r in csv.DictReader(plain.open())]
    names = ["hbar", "vbar", "square"]
    doubtful = 0
    for row in rows:
        p = np.array([float(row[f"p_{n}"]) for n in names])
        assert p.sum() == pytest.approx(1.0, abs=1e-5) and (p >= 0).all()
        assert row["label"] == names[int(p.argmax())]
        top = np.sort(p)[::-1]
        assert float(row["margin"]) == pytest.approx(top[0] - top[1], abs=2e-6)
        doubtful += float(row["margin"]) < 0.2
    assert f"{doubtful} with a margin under 0.2" in r.output


def test_reconstruct_grid(trained, tmp_path, shapes_test_npz):
    png = tmp_path / "grid.png"
    r = invoke("reconstruct", shapes_test_npz, "--ckpt", trained / "pretrain", "--ckpt", trained / "finetune",
               "--n", "6", "--out", png)  # fmt: skip
    assert r.exit_code == 0, r.output
    with Image.open(png) as im:
        assert im.size[0] > im.size[1] > 50


def test_finetune_from_scratch_and_unlabeled_error(tmp_path, shapes_npz):
    r = invoke("finetune", shapes_npz, "--out", tmp_path / "s", "--model", "convae_tiny", "--epochs", "1",
               "--set", "augment=standard", "--labels-per-class", "10",
               "--set", "min_epoch_steps=0")  # fmt: skip
    assert r.exit_code == 0, r.output
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((20, 16, 16), np.uint8))
    r = invoke("finetune", flat, "--out", tmp_path / "t", "--model", "convae_tiny", "--epochs", "1")
    assert r.exit_code == 2
    assert "needs labels" in r.output


def test_masked_pretraining_and_weight_averaging_from_the_cli(tmp_path, shapes_npz):
    from aelab.training import load_model
    from aelab.training.checkpoint import load_weights

    r = invoke("pretrain", shapes_npz, "--out", tmp_path, "--model", "convae_tiny", "--epochs", "1",
               "--set", "mask_ratio=0.5")  # fmt: skip
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "pretrain" / "config.json").read_text())["config"]
    assert config["mask_ratio"] == 0.5
    r = invoke("finetune", shapes_npz, "--init", tmp_path / "pretrain", "--out", tmp_path,
               "--epochs", "1", "--set", "ema_decay=0.9", "--set", "distribution_alignment=true",
               "--labels-per-class", "10", "--set", "batch_size=8", "--set", "min_epoch_steps=0")  # fmt: skip
    assert r.exit_code == 0, r.output
    run = tmp_path / "finetune"
    saved = json.loads((run / "config.json").read_text())["config"]
    assert saved["distribution_alignment"] is True and saved["semi"] == "fixmatch"
    raw, _ = load_weights(run / "train_weights.safetensors")
    model, _ = load_model(run, which="last")
    key = "classifier.0.weight"
    assert not np.allclose(raw[key].numpy(), model.state_dict()[key].numpy())
    r = invoke("pretrain", shapes_npz, "--out", tmp_path / "bad", "--set", "mask_ratio=1.5")
    assert r.exit_code == 2 and "mask_ratio" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["predict", "{data}", "--ckpt", "{tmp}/empty", "--out", "{tmp}/x.csv"],
            "not an aelab checkpoint",
        ),
        (["pretrain", "{tmp}/missing.npy", "--out", "{tmp}/r"], "missing.npy"),
        (["pretrain", "{data}", "--out", "{tmp}/r", "--model", "nope"], "unknown model"),
        (["pretrain", "{data}", "--out", "{tmp}/r", "--device", "cuda:7"], "CUDA"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, shapes_npz, args, message):
    import torch

    if "cuda:7" in args and torch.cuda.is_available():
        pytest.skip("CUDA present")
    args = [a.format(data=shapes_npz, tmp=tmp_path) for a in args]
    (tmp_path / "empty").mkdir()  # no checkpoint, and not the folder --out is in
    r = invoke(*args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not (tmp_path / "x.csv").exists()


def test_models_command_lists_registry():
    r = invoke("models")
    assert r.exit_code == 0
    assert "convae " in r.output and "23.38 M" in r.output


def test_a_log_file_gets_one_line_per_epoch(tmp_path, shapes_npz):
    """Progress bars are drawn on a terminal only: stderr to a file carries one line an epoch."""
    import os
    import subprocess
    import sys

    log = tmp_path / "log.txt"
    with log.open("w") as err:
        res = subprocess.run(
            [sys.executable, "-m", "aelab", "pretrain", str(shapes_npz), "--out", str(tmp_path / "r"),
             "--model", "convae_tiny", "--epochs", "2", "--set", "batch_size=32", "--device", "cpu"],
            stdout=subprocess.PIPE, stderr=err, text=True, timeout=300,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    assert res.returncode == 0, log.read_text()
    text = log.read_text()
    assert "\r" not in text and "it/s" not in text, text[:500]
    epochs = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/2", "2/2"], text


@pytest.mark.parametrize(
    "flags, config_amp, used",
    [([], "auto", None), (["--set", "amp=none"], None, None), (["--bf16"], "bf16", "bf16"),
     (["--set", "amp=bf16"], "bf16", "bf16")],
)  # fmt: skip
def test_amp_flag_and_its_old_alias(tmp_path, shapes_npz, flags, config_amp, used):
    """amp auto|bf16|none (default auto; convae_tiny is small, so float32); old --bf16 = amp=bf16."""
    out = tmp_path / "r"
    r = invoke("pretrain", shapes_npz, "--out", out, "--model", "convae_tiny", "--epochs", "1",
               "--set", "max_images=64", "--set", "batch_size=32", "--device", "cpu", *flags)  # fmt: skip
    assert r.exit_code == 0, r.output
    recorded = json.loads((out / "pretrain" / "config.json").read_text())
    assert recorded["config"]["amp"] == config_amp and recorded["speed"]["amp"] == used


def test_contradicting_amp_flags_are_one_line_error(tmp_path, shapes_npz):
    r = invoke("pretrain", shapes_npz, "--out", tmp_path / "r", "--bf16", "--amp", "none")
    assert r.exit_code == 2 and "--bf16: the setting amp was given by another old flag" in r.output
    assert len(r.output.strip().splitlines()) == 1
