"""Issue 19, "checked too late, or not at all": inputs that used to train or predict without a
word are refused in one line with exit 2 before any work starts: an ``.npz`` without an images
member, a classifier of one class, labels that skip classes, a checkpoint with non-finite
weights, and class names that do not fit the classifier's head."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aelab.data import load_dataset
from conftest import invoke
from conftest import one_line_error as _one_line_error

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = ("--set", "model=convae_tiny", "--epochs", "1", "--set", "batch_size=8", "--device", "cpu")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """90 images of 3 named classes, a pre-trained and a fine-tuned convae_tiny checkpoint."""
    from conftest import make_shapes

    root = tmp_path_factory.mktemp("checks")
    images, labels, names = make_shapes(90)
    np.savez(root / "d.npz", images=images, labels=labels, class_names=np.array(names))
    r = invoke("pretrain", root / "d.npz", "--out", root / "R", *TRAIN)
    assert r.exit_code == 0, r.output
    r = invoke("finetune", root / "d.npz", "--init", root / "R" / "pretrain", "--out", root / "R",
               "--recipe", "plain", *TRAIN)  # fmt: skip
    assert r.exit_code == 0, r.output
    return root


def _copy_checkpoint(run, tmp_path, which="finetune"):
    ckpt = tmp_path / which
    shutil.copytree(run / "R" / which, ckpt)
    return ckpt


def _poison(path, make_bad):
    """Rewrite the safetensors file ``path`` with ``make_bad(name, tensor)``, keeping its metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    tensors = {k: make_bad(k, v) for k, v in load_file(str(path)).items()}
    save_file(tensors, str(path), metadata=meta)


# ----------------------------------------------------------------------------- .npz members


def test_npz_members_are_read_by_name(run, tmp_path):
    images, labels = np.load(run / "d.npz")["images"], np.load(run / "d.npz")["labels"]
    # Used to train on `foo`, the archive's first member.
    np.savez(tmp_path / "foo.npz", foo=images, labels=labels)
    r = invoke("finetune", tmp_path / "foo.npz", "--out", tmp_path / "F", *TRAIN)
    _one_line_error(r, "foo.npz", "no 'images' array", "'foo', 'labels'", "np.savez(path, images=")
    assert not (tmp_path / "F").exists()
    r = invoke("pretrain", tmp_path / "foo.npz", "--out", tmp_path / "P", *TRAIN)
    _one_line_error(r, "'foo', 'labels'")
    assert not (tmp_path / "P").exists()
    # np.savez(path, images) names the array arr_0: unnamed, refused the same way.
    np.savez(tmp_path / "pos.npz", images)
    with pytest.raises(ValueError, match=r"no 'images' array in the \.npz \(it holds 'arr_0'\)"):
        load_dataset(tmp_path / "pos.npz", progress=False)
    # The names the README and the loader document still load: images/x, labels/y, x_<split>.
    np.savez(tmp_path / "xy.npz", x=images, y=labels)
    assert load_dataset(tmp_path / "xy.npz", progress=False).labels.tolist() == labels.tolist()
    np.savez(tmp_path / "keras.npz", x_train=images[:60], y_train=labels[:60], x_test=images[60:],
             y_test=labels[60:])  # fmt: skip
    test = load_dataset(tmp_path / "keras.npz", split="test", progress=False)
    assert len(test) == 30 and test.labels.tolist() == labels[60:].tolist()
    assert len(load_dataset(tmp_path / "keras.npz", progress=False)) == 60


def test_a_split_that_leaves_nothing_to_train_on_says_so(run, tmp_path):
    # Used to say only "error: data is empty".
    for flags, words in (
        (("--set", "max_images=2", "--set", "val_fraction=0.9"),
         ("d.npz: 2 images (max_images 2), 2 held out for validation (val_fraction 0.9)",
          "leaving 0 to train on", "lower val_fraction")),
        (("--set", "val_fraction=0.99"), ("90 images, 90 held out", "leaving 0 to train on")),
        (("--set", "max_images=1"), ("1 image (max_images 1), 0 held out", "leaving 1 to train on")),
    ):  # fmt: skip
        r = invoke("pretrain", run / "d.npz", "--out", tmp_path / "E", *TRAIN, *flags)
        _one_line_error(r, *words)
        assert not (tmp_path / "E").exists()


# ----------------------------------------------------------------------------- classes


def test_a_classifier_needs_two_classes(run, tmp_path):
    images = np.load(run / "d.npz")["images"]
    zeros = np.zeros(len(images), dtype=np.int64)
    # Used to train a 1-class classifier reporting val_acc 1.
    np.savez(tmp_path / "one.npz", images=images, labels=zeros, class_names=np.array(["only"]))
    r = invoke("finetune", tmp_path / "one.npz", "--out", tmp_path / "O", *TRAIN)
    _one_line_error(r, "one.npz", "at least two classes", "only class 'only'")
    assert not (tmp_path / "O").exists()
    # Two names but images of one class only, and no names at all: refused alike.
    np.savez(tmp_path / "two.npz", images=images, labels=zeros, class_names=np.array(["a", "b"]))
    r = invoke("finetune", tmp_path / "two.npz", "--out", tmp_path / "O", *TRAIN)
    _one_line_error(r, "at least two classes", "only class 'a'")
    np.savez(tmp_path / "bare.npz", images=images, labels=zeros)
    r = invoke("finetune", tmp_path / "bare.npz", "--init", run / "R" / "pretrain",
               "--out", tmp_path / "O", *TRAIN)  # fmt: skip
    _one_line_error(r, "at least two classes", "only class 0")
    assert not (tmp_path / "O").exists()
    # The library's finetune refuses it too (the study calls it with its own splits).
    from aelab.data import from_array
    from aelab.models import create_model
    from aelab.training import FinetuneConfig, finetune

    ds = from_array(images[:10], zeros[:10])
    with pytest.raises(ValueError, match="^labeled: a classifier needs images of at least two"):
        finetune(create_model("convae_tiny", image_size=16), ds, config=FinetuneConfig(epochs=1))


def test_labels_must_be_the_classes_that_occur(run, tmp_path):
    images = np.load(run / "d.npz")["images"]
    labels = np.arange(len(images)) % 3
    labels[5] = 5  # a stray 5 among 0-2, no class names: used to give num_classes 6
    np.savez(tmp_path / "stray.npz", images=images, labels=labels)
    r = invoke("finetune", tmp_path / "stray.npz", "--out", tmp_path / "S", "--recipe", "plain",
               *TRAIN)  # fmt: skip
    _one_line_error(r, "stray.npz", "the labels 0, 1, 2, 5 leave class(es) 3, 4 without images",
                    "renumber the labels 0..3 or give class names")  # fmt: skip
    assert not (tmp_path / "S").exists()
    # The rule itself: names define the classes; without them, the labels that occur.
    from aelab.data import check_classes

    assert check_classes(np.array([0, 1, 2, 1]), None, "d") == 3
    assert check_classes(np.array([0, 2, 5]), [f"c{i}" for i in range(6)], "d") == 6
    with pytest.raises(ValueError, match=r"d: label 6 is out of range for 6 class names"):
        check_classes(np.array([0, 6]), [f"c{i}" for i in range(6)], "d")
    with pytest.raises(ValueError, match=r"leave class\(es\) 0 without images"):
        check_classes(torch.tensor([1, 2, 1]), None, "d")
    with pytest.raises(ValueError, match=r"found no labelled images"):
        check_classes(np.array([], dtype=np.int64), None, "d")


# ----------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_with_non_finite_weights_is_refused(run, tmp_path):
    from aelab.models import create_model

    ckpt = _copy_checkpoint(run, tmp_path)
    for name in ("model.safetensors", "best.safetensors"):
        _poison(ckpt / name, lambda k, v: v.fill_(float("nan")) if v.is_floating_point() else v)
    config = json.loads((ckpt / "model.json").read_text())["config"]
    first = next(k for k, v in create_model("convae_tiny", **config).state_dict().items()
                 if v.is_floating_point())  # fmt: skip
    out = tmp_path / "p.csv"
    # Used to predict class 0 for every image, exit 0.
    r = invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", out, "--device", "cpu")
    _one_line_error(r, str(ckpt / "best.safetensors"), f"tensor {first!r}", "NaN or infinite")
    assert not out.exists()
    r = invoke("evaluate", run / "d.npz", "--ckpt", ckpt, "--device", "cpu")
    _one_line_error(r, f"tensor {first!r}")
    # One infinity deep inside: the message names that tensor, not the first one.
    ckpt = _copy_checkpoint(run, tmp_path / "inf")
    names = list(load_file(str(ckpt / "best.safetensors")))
    target = next(k for k in names if k.startswith("classifier") and k.endswith("bias"))
    _poison(ckpt / "best.safetensors",
            lambda k, v: v.index_fill_(0, torch.tensor([0]), float("inf")) if k == target else v)  # fmt: skip
    r = invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", out, "--device", "cpu")
    _one_line_error(r, f"tensor {target!r} holds 1 NaN or infinite value(s)")
    assert not out.exists()


def test_a_run_with_non_finite_weights_is_not_resumed(run, tmp_path):
    ckpt = _copy_checkpoint(run, tmp_path, "pretrain")
    _poison(ckpt / "model.safetensors",
            lambda k, v: v.fill_(float("nan")) if v.is_floating_point() else v)  # fmt: skip
    before = {p.name: p.read_bytes() for p in ckpt.iterdir()}
    r = invoke("pretrain", run / "d.npz", "--out", tmp_path, "--resume", *TRAIN)
    _one_line_error(r, str(ckpt / "model.safetensors"), "NaN or infinite")
    assert {p.name: p.read_bytes() for p in ckpt.iterdir()} == before


def test_class_names_must_fit_the_classifier(run, tmp_path):
    ckpt = _copy_checkpoint(run, tmp_path)
    meta_path = ckpt / "model.json"
    meta = json.loads(meta_path.read_text())
    assert meta["class_names"] == ["hbar", "vbar", "square"] and meta["config"]["num_classes"] == 3
    out = tmp_path / "p.csv"
    # A shorter hand-edited list used to give numeric labels, exit 0.
    meta_path.write_text(json.dumps({**meta, "class_names": ["hbar", "vbar"]}))
    r = invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", out, "--device", "cpu")
    _one_line_error(r, str(meta_path), "class_names lists 2 names but the classifier has 3 outputs")
    assert not out.exists()
    meta_path.write_text(json.dumps({**meta, "class_names": "hbar,vbar,square"}))
    r = invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", out, "--device", "cpu")
    _one_line_error(r, "class_names must be a list of strings or null")
    # null: the classes are predicted as numbers, as documented.
    meta_path.write_text(json.dumps({**meta, "class_names": None}))
    r = invoke("predict", run / "d.npz", "--ckpt", ckpt, "--out", out, "--device", "cpu")
    assert r.exit_code == 0, r.output
    with out.open(newline="") as f:
        predicted = {row["label"] for row in csv.DictReader(f)}
    assert predicted and predicted <= {"0", "1", "2"}, predicted
    # A pre-trained checkpoint records its data's 3 names beside an untrained 10-output head.
    pre = json.loads((run / "R" / "pretrain" / "model.json").read_text())
    assert len(pre["class_names"]) == 3 and pre["config"]["num_classes"] == 10
    r = invoke("reconstruct", run / "d.npz", "--ckpt", run / "R" / "pretrain",
               "--out", tmp_path / "grid.png", "--n", "4", "--device", "cpu")  # fmt: skip
    assert r.exit_code == 0, r.output
