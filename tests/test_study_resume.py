"""A resumed study reruns exactly the steps whose settings, data or earlier steps changed.

Every step records its fingerprint (``steps/<name>.json``); ``--resume`` with
one setting of one TOML section changed reruns the steps that depend on it,
says what changed in one line, reuses the others, and the report and
``config.toml`` then describe the new results. Tiny data, one fine-tuning
preset, and every resume starts from a copy of one finished study.
"""

import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from aelab.cli.main import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = ("pretrain", "finetune-none", "finetune-default", "predict", "cluster", "anomaly",
         "reconstruct")  # fmt: skip

BASE = {
    "": {"seed": 0, "device": "cpu"},
    "data": {"source": "train.npz", "test": "test.npz", "labels_per_class": 5,
             "val_per_class": 5},
    "pretrain": {"model": "convae_tiny", "epochs": 1, "batch_size": 32},
    "finetune": {"epochs": 1, "batch_size": 16, "ablation": ["none"]},
    "finetune.default": {"epochs": 1, "min_epoch_steps": 2, "batch_size": 16},
    "cluster": {"n": 24, "map": "pca", "sweep": "1x"},
    "anomaly": {"model": "convae_tiny", "epochs": 1, "min_steps": 0, "batch_size": 32,
                "max_anomalies": 16},
    "reconstruct": {"n": 2},
}  # fmt: skip


def _toml(changes=None):
    """The base config with ``changes`` ({section: {key: value}}) applied, as TOML text."""
    lines = []
    for section, values in BASE.items():
        values = {**values, **(changes or {}).get(section, {})}
        lines += [f"[{section}]"] if section else []
        lines += [f"{k} = {_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _value(v):
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def _npz(path, n, seed, classes=3):
    from conftest import make_shapes

    images, labels, names = make_shapes(n, seed=seed)
    keep = labels < classes
    np.savez(path, images=images[keep], labels=labels[keep], class_names=np.array(names[:classes]))


def _study(folder, changes=None, *extra):
    """``aelab study`` in ``folder`` (relative paths, so that a copied study is its own)."""
    (folder / "study.toml").write_text(_toml(changes))
    r = CliRunner().invoke(app, ["study", "study.toml", "--out", "run", *extra])
    assert r.exit_code == 0, r.output
    return r.output


def _ran(output):
    """The steps that ran (not reused), from the one line each step prints first."""
    first = {}
    for m in re.finditer(r"^\[([\w-]+)\] (.*)$", output, re.M):
        first.setdefault(m.group(1), m.group(2))
    assert set(STEPS) <= set(first), output
    return {s for s in STEPS if not first[s].startswith("reused")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished study, copied by each test."""
    import os

    folder = tmp_path_factory.mktemp("base")
    _npz(folder / "train.npz", 90, 0)
    _npz(folder / "test.npz", 45, 1)
    here = os.getcwd()
    os.chdir(folder)
    try:
        _study(folder)
    finally:
        os.chdir(here)
    return folder


@pytest.fixture
def study(finished, tmp_path, monkeypatch):
    folder = tmp_path / "s"
    shutil.copytree(finished, folder)
    monkeypatch.chdir(folder)
    return folder


def test_nothing_changed_reruns_nothing(study):
    out = _study(study, None, "--resume")
    assert _ran(out) == set()
    # The config.toml the study wrote reads back to the same fingerprints.
    r = CliRunner().invoke(app, ["study", "run/config.toml", "--out", "run", "--resume"])
    assert r.exit_code == 0 and _ran(r.output) == set(), r.output


def test_top_level_device_is_not_part_of_the_fingerprint(study):
    assert _ran(_study(study, {"": {"device": "auto"}}, "--resume")) == set()


@pytest.mark.parametrize(
    ("changes", "expected", "line"),
    [
        (
            {"data": {"max_test": 30}},
            {"predict", "cluster", "anomaly", "reconstruct"},
            "[predict] test images changed: running again",
        ),
        (
            {"pretrain": {"epochs": 2}},
            set(STEPS) - {"anomaly"},
            "[pretrain] epochs changed (1 -> 2): running again",
        ),
        (
            # A setting of the ablation only: the submitted run, cluster and reconstruct stay.
            {"finetune": {"lr": 0.002}},
            {"finetune-none", "predict"},
            "[finetune-none] lr changed (0.001 -> 0.002): running again",
        ),
        (
            # A setting of the default-recipe run only: the ablation stays.
            {"finetune.default": {"epochs": 2}},
            {"finetune-default", "predict", "cluster", "reconstruct"},
            "[finetune-default] epochs changed (1 -> 2): running again",
        ),
        (
            {"cluster": {"classes": [2, 1]}},
            {"cluster"},
            "[cluster] classes changed ([0, 1, 2] -> [2, 1]): running again",
        ),
        (
            {"anomaly": {"normal_class": 1}},
            {"anomaly"},
            '[anomaly] normal_class changed ("hbar" -> "vbar"): running again',
        ),
        (
            {"reconstruct": {"n": 3}},
            {"reconstruct"},
            "[reconstruct] n changed (2 -> 3): running again",
        ),
    ],
    ids=["data", "pretrain", "finetune", "finetune-default", "cluster", "anomaly", "reconstruct"],
)
def test_one_changed_setting_reruns_the_steps_that_depend_on_it(study, changes, expected, line):
    before = {s: json.loads((study / "run" / "steps" / f"{s}.json").read_text()) for s in STEPS}
    out = _study(study, changes, "--resume")
    assert _ran(out) == expected, out
    assert line in out.splitlines(), out
    for s in STEPS:
        after = json.loads((study / "run" / "steps" / f"{s}.json").read_text())
        assert (after == before[s]) == (s not in expected), s
    # A second resume with the same change reuses everything.
    assert _ran(_study(study, changes, "--resume")) == set()


def test_the_report_and_config_show_the_new_results(study):
    out = _study(study, {"cluster": {"classes": [2, 1]}}, "--resume")
    cluster = json.loads((study / "run" / "steps" / "cluster.json").read_text())["result"]
    assert cluster["classes"] == ["square", "vbar"], out
    page = (study / "run" / "report.html").read_text()
    assert ":".join(map(str, cluster["result"]["sweep"][0]["sizes"])) in page
    assert "classes = [2, 1]" in (study / "run" / "config.toml").read_text()


def test_resume_on_other_data_reruns_everything(study):
    """A study of one data set resumed with --data of another is run again, not reused."""
    _npz(study / "other.npz", 60, 5, classes=2)
    out = _study(study, None, "--resume", "--data", "other.npz", "--test", "auto")
    assert _ran(out) == set(STEPS), out
    assert "[pretrain] training images changed: running again" in out.splitlines()
    predict = json.loads((study / "run" / "steps" / "predict.json").read_text())["result"]
    assert predict["prediction"]["class_names"] == ["hbar", "vbar"]
    rows = (study / "run" / "submission.csv").read_text().splitlines()
    assert len(rows) - 1 == predict["prediction"]["n"] == 8  # 20 % of the 40 images held out
    page = (study / "run" / "report.html").read_text()
    assert "Data: other.npz (32 images of shape 1x16x16, 2 classes" in page
    assert "classes hbar, vbar in the ratio" in page
    assert 'source = "other.npz"' in (study / "run" / "config.toml").read_text()


def test_quick_resume_with_a_changed_file_reruns_and_keeps_what_the_file_says(study):
    """The issue's case: ``--quick`` then a file changing [finetune] epochs and [cluster] classes.

    The file's values win over the preset (finetune.epochs stays 2, not the preset's 6)
    and the run says which preset values it used.
    """
    out = _study(study, {"finetune": {"epochs": 2}, "cluster": {"classes": [1, 2]}},
                 "--resume", "--quick")  # fmt: skip
    first = out.splitlines()[0]
    assert first.startswith("[quick] preset values used: data.max_test=1000,"), out
    assert "yours kept: data.labels_per_class," in first and "finetune.epochs" in first
    assert _ran(out) >= {"finetune-none", "predict", "cluster", "reconstruct"}, out
    ft = json.loads((study / "run" / "steps" / "finetune-none.json").read_text())["result"]
    assert len(ft["history"]) == 2
    assert "epochs = 2" in (study / "run" / "config.toml").read_text()
    page = (study / "run" / "report.html").read_text()
    assert "classes vbar, square in the ratio" in page


# ----------------------------------------------------------------------------- checked at once


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"finetune": {"ablation": []}}, "[finetune] ablation must be a non-empty list"),
        ({"finetune": {"ablation": ["bogus"]}}, "got ['bogus']"),
        ({"anomaly": {"threshold": "fpr:2"}}, "[anomaly] the rate in threshold 'fpr:2'"),
        ({"pretrain": {"model_overrides": {"foo": 1}}}, "unknown setting 'model_overrides.foo'"),
        ({"anomaly": {"model_overrides": {"latent_dim": "x"}}}, "model_overrides.latent_dim"),
        ({"cluster": {"sweep": "lots"}}, "[cluster] sweep must be alphas"),
    ],
    ids=[
        "ablation-empty",
        "ablation-bogus",
        "threshold",
        "pretrain-model",
        "anomaly-model",
        "sweep",
    ],
)
def test_settings_are_refused_before_any_step(tmp_path, monkeypatch, changes, words):
    """One line, exit 2, and no step ran (they used to fail after pre-training)."""
    _npz(tmp_path / "train.npz", 90, 0)
    _npz(tmp_path / "test.npz", 45, 1)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.toml").write_text(_toml(changes))
    r = CliRunner().invoke(app, ["study", "study.toml", "--out", "run"])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], r.output
    assert not (tmp_path / "run").exists()


def test_what_the_user_wrote_wins_over_quick(tmp_path):
    """defaults < --quick < the file < flags, and one line names the preset values used."""
    from aelab.study import load_config
    from aelab.study.config import QUICK_OVERRIDES

    q = tmp_path / "q.toml"
    q.write_text('[pretrain]\nepochs = 1\n[finetune]\nepochs = 2\nrecipe = "default"\n')
    said = []
    cfg = load_config(q, quick=True, overrides={"data": {"max_test": 7}}, log=said.append)
    assert cfg.pretrain.epochs == 1 and cfg.finetune.settings.epochs == 2
    assert cfg.finetune.recipe == "default" and cfg.finetune.settings.semi == "fixmatch"
    assert cfg.data.max_test == 7  # a flag wins over the preset
    assert cfg.data.labels_per_class == QUICK_OVERRIDES["data"]["labels_per_class"]
    assert cfg.pretrain.max_images == QUICK_OVERRIDES["pretrain"]["max_images"]
    assert len(said) == 1 and said[0].startswith("[quick] preset values used: ")
    assert "data.labels_per_class=20" in said[0] and "pretrain.max_images=2000" in said[0]
    assert "yours kept: data.max_test, pretrain.epochs, finetune.epochs" in said[0]
    # A recipe named in the file does not undo the preset's epochs for the settings it names.
    q.write_text('[finetune]\nrecipe = "default"\n')
    assert (
        load_config(q, quick=True).finetune.settings.epochs == QUICK_OVERRIDES["finetune"]["epochs"]
    )


def test_submit_names_the_run_that_writes_the_submission(study):
    """``submit = "ablation"``: no default-recipe run; the best ablation run submits and clusters."""
    out = _study(study, {"finetune": {"submit": "ablation"}}, "--resume")
    assert '[predict] submit changed ("default" -> "ablation"): running again' in out, out
    for step in ("cluster", "reconstruct"):
        assert f"[{step}] reused" not in out, out
    assert "[finetune-default]" not in out and "[finetune-none] reused" in out
    predict = json.loads((study / "run" / "steps" / "predict.json").read_text())["result"]
    assert predict["best_run"] == "none" and set(predict["test_accuracy"]) == {"none"}
    cluster = json.loads((study / "run" / "steps" / "cluster.json").read_text())["result"]
    assert cluster["encoder"] == "finetune-none"
    assert "the best ablation run" in (study / "run" / "report.html").read_text()


def test_the_top_level_seed_reaches_the_default_recipe_run(study):
    out = _study(study, {"": {"seed": 1}}, "--resume")
    assert "[finetune-default] seed changed (0 -> 1): running again" in out.splitlines(), out
    rec = json.loads((study / "run" / "steps" / "finetune-default.json").read_text())
    assert rec["fingerprint"]["settings"]["seed"] == 1


def test_quick_gives_the_default_run_a_short_schedule_of_its_own():
    """--quick: a few FixMatch epochs of few steps on a capped pool, printed and reported."""
    from aelab.study import load_config
    from aelab.study.run import _shortened

    said = []
    cfg = load_config(quick=True, log=said.append)
    run = cfg.finetune.default
    assert (run.epochs, run.min_epoch_steps, run.semi) == (3, 60, "fixmatch")
    assert cfg.finetune.max_unlabeled == 1000 and cfg.finetune.settings.epochs == 6
    assert run.batch_size == 32
    assert "finetune.default.epochs=3, finetune.default.min_epoch_steps=60" in said[0]
    assert _shortened(cfg).startswith("min_epoch_steps 60 (the recipe's 250), batch_size 32")
    assert _shortened(load_config()) == ""
