"""``--unlabeled MORE``: images of their own beside the labelled set, for pre-training and FixMatch.

MORE is a flat folder or an array of another size and mode (brought to the
model's shape), its labels are ignored, it is an input the path guard keeps
outputs out of, and its images are part of the run's fingerprint.
"""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aelab.cli.main import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def data(tmp_path):
    from conftest import make_shapes

    images, labels, names = make_shapes(60)
    np.savez(tmp_path / "d.npz", images=images, labels=labels, class_names=np.array(names))
    # 30 RGB images of 20x20 in a flat folder: converted to the model's 1x16x16.
    more, _, _ = make_shapes(30, size=20, seed=3)
    (tmp_path / "more").mkdir()
    for i, a in enumerate(more):
        Image.fromarray(a).convert("RGB").save(tmp_path / "more" / f"{i}.png")
    # 12 labelled images in an .npz: the labels are ignored.
    other, other_labels, _ = make_shapes(12, seed=4)
    np.savez(tmp_path / "more.npz", images=other, labels=other_labels + 7)
    return tmp_path


def _config(run):
    return json.loads((run / "config.json").read_text())


def test_pretrain_trains_on_data_and_unlabeled_images(data):
    r = _invoke("pretrain", data / "d.npz", "--unlabeled", data / "more", "--out", data / "run",
                "--model", "convae_tiny", "--epochs", "1")  # fmt: skip
    assert r.exit_code == 0, r.output
    conf = _config(data / "run" / "pretrain")
    assert conf["data"]["train"] + conf["data"]["val"] == 60 + 30
    # Other unlabeled images: another fingerprint, so a resume is refused in one line.
    r = _invoke("pretrain", data / "d.npz", "--unlabeled", data / "more.npz", "--out", data / "run",
                "--model", "convae_tiny", "--epochs", "1", "--resume")  # fmt: skip
    assert r.exit_code == 2 and "training images changed" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_finetune_pool_holds_the_unused_images_and_more(data):
    args = ("finetune", data / "d.npz", "--out", data / "run", "--model", "convae_tiny",
            "--epochs", "1", "--labels-per-class", "5", "--set", "min_epoch_steps=2")  # fmt: skip
    r = _invoke(*args, "--name", "alone")
    assert r.exit_code == 0, r.output
    r = _invoke(*args, "--name", "more", "--unlabeled", data / "more.npz")
    assert r.exit_code == 0, r.output
    alone, more = _config(data / "run" / "alone"), _config(data / "run" / "more")
    assert more["data"]["unlabeled"] == alone["data"]["unlabeled"] + 12
    assert more["data"]["labeled"] == alone["data"]["labeled"] == 15
    fa, fm = alone["fingerprint"]["data"], more["fingerprint"]["data"]
    assert fa["unlabeled images"] != fm["unlabeled images"]
    assert fa["labelled images"] == fm["labelled images"]


def test_unlabeled_refusals_are_one_line(data):
    cases = [
        (("finetune", data / "d.npz", "--unlabeled", data / "more", "--recipe", "plain",
          "--out", data / "o1"), "--unlabeled: these settings learn from labels only"),
        (("finetune", data / "d.npz", "--unlabeled", data / "more", "--out", data / "more" / "x"),
         "an input of this command"),
        (("pretrain", data / "d.npz", "--unlabeled", data / "nothing", "--out", data / "o2"),
         "--unlabeled:"),
        (("pretrain", data / "d.npz", "--unlabeled", data / "more", "--stream",
          "--out", data / "o3"), "drop --stream or --unlabeled"),
    ]  # fmt: skip
    for args, words in cases:
        r = _invoke(*args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and words in lines[0], r.output
    assert not any((data / o).exists() for o in ("o1", "o2", "o3", "more/x"))


STUDY = """
seed = 0
device = "cpu"
[data]
source = "d.npz"
test = "t.npz"
unlabeled = "{more}"
labels_per_class = 5
val_per_class = 5
[pretrain]
model = "convae_tiny"
epochs = 1
batch_size = 32
[finetune]
epochs = 1
batch_size = 16
ablation = ["none"]
[finetune.default]
epochs = 1
min_epoch_steps = 2
batch_size = 16
[cluster]
n = 24
map = "pca"
sweep = "1x"
[anomaly]
model = "convae_tiny"
epochs = 1
min_steps = 0
batch_size = 32
max_anomalies = 16
[reconstruct]
n = 2
"""


def test_a_study_on_labelled_data_plus_an_unlabeled_set(data, monkeypatch):
    """End to end: pre-training and FixMatch read MORE too; MORE is in their fingerprints."""
    from conftest import make_shapes

    images, labels, names = make_shapes(30, seed=1)
    np.savez(data / "t.npz", images=images, labels=labels, class_names=np.array(names))
    monkeypatch.chdir(data)
    (data / "s.toml").write_text(STUDY.format(more="more"))
    r = _invoke("study", "s.toml", "--out", "run")
    assert r.exit_code == 0, r.output
    steps = data / "run" / "steps"
    pre = json.loads((steps / "pretrain.json").read_text())["result"]
    # 60 labelled images, 15 of them validation: 45 + the 30 of MORE, 5 % held out.
    assert pre["n_train"] + pre["n_val"] == 45 + 30
    ft = _config(data / "run" / "finetune-default")
    assert ft["data"]["unlabeled"] == 45 + 30
    page = (data / "run" / "report.html").read_text()
    assert "and 30 unlabeled images from more" in page
    assert (data / "run" / "submission.csv").read_text().count("\n") == 31
    # Other unlabeled images: every step that read them (all but the detector's) runs again.
    r = _invoke("study", "s.toml", "--out", "run", "--resume", "--unlabeled", "more.npz")
    assert r.exit_code == 0, r.output
    assert "[pretrain] training images changed: running again" in r.output
    assert "[anomaly] reused" in r.output and "reused" not in r.output.replace(
        "[anomaly] reused", ""
    )
    assert 'unlabeled = "more.npz"' in (data / "run" / "config.toml").read_text()
    # An output inside MORE is refused before anything runs.
    r = _invoke("study", "s.toml", "--out", "more/run")
    assert r.exit_code == 2 and "an input" in r.output, r.output
