"""The whole study on a tiny dataset: every artefact, resume, and the report in a real browser."""

import base64
import io
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aelab.cli.main import app
from aelab.study.config import (
    DEFAULT_TOML,
    QUICK_OVERRIDES,
    default_config,
    dump_config,
    load_config,
)

TINY = """
seed = 0
device = "cpu"
[data]
source = "{train}"
test = "{test}"
model = "convae_tiny"
labels_per_class = 15
val_per_class = 10
[pretrain]
epochs = 2
batch_size = 32
[finetune]
epochs = 3
batch_size = 16
[cluster]
classes = [0, 1, 2]
ratio = [2, 1, 1]
n = 40
map = "pca"
[anomaly]
normal_class = 0
epochs = 2
max_anomalies = 40
[reconstruct]
n = 4
"""


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    from conftest import make_shapes

    tmp = tmp_path_factory.mktemp("study")
    for name, n, seed in (("train", 180, 0), ("test", 60, 1)):
        images, labels, names = make_shapes(n, seed=seed)
        np.savez(tmp / f"{name}.npz", images=images, labels=labels, class_names=np.array(names))
    cfg = tmp / "tiny.toml"
    cfg.write_text(TINY.format(train=tmp / "train.npz", test=tmp / "test.npz"))
    out = tmp / "run"
    r = CliRunner().invoke(app, ["study", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, r.output


def test_study_writes_every_artefact(study_run):
    out, output = study_run
    for rel in ("report.html", "submission.csv", "sweep.csv", "config.toml", "pretrain/model.safetensors",
                "finetune-standard/metrics.csv", "finetune-none/metrics.csv", "anomaly/detector.json",
                "figures/ekm_panels.png", "figures/reconstructions.png", "figures/anomaly_roc.png"):  # fmt: skip
        assert (out / rel).is_file(), rel
    assert "report:" in output
    sub = (out / "submission.csv").read_text().splitlines()
    assert sub[0] == "id,label" and len(sub) == 61
    sweep = (out / "sweep.csv").read_text().splitlines()
    assert len(sweep) == 4  # header + the three alphas
    steps = {p.stem for p in (out / "steps").glob("*.json")}
    assert steps == {
        "pretrain",
        "finetune-standard",
        "finetune-none",
        "predict",
        "cluster",
        "anomaly",
        "reconstruct",
    }


def test_report_holds_the_runs_numbers(study_run):
    out, _ = study_run
    page = (out / "report.html").read_text()
    anomaly = json.loads((out / "steps" / "anomaly.json").read_text())["result"]["metrics"]
    assert f"{anomaly['roc_auc']:.4g}" in page
    cluster = json.loads((out / "steps" / "cluster.json").read_text())["result"]
    for row in cluster["rows"]:
        assert ":".join(map(str, row["sizes"])) in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) >= 6
    for u in uris:
        Image.open(io.BytesIO(base64.b64decode(u))).verify()


def test_resume_skips_finished_steps(study_run):
    out, _ = study_run
    cfg = out / "config.toml"
    before = (out / "pretrain" / "model.safetensors").stat().st_mtime_ns
    r = CliRunner().invoke(app, ["study", str(cfg), "--out", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    assert r.output.count("reused") == 7
    assert (out / "pretrain" / "model.safetensors").stat().st_mtime_ns == before
    r = CliRunner().invoke(app, ["study", str(cfg), "--out", str(out)])
    assert r.exit_code == 2 and "--resume" in r.output


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_in_headless_chromium(study_run, tmp_path):
    """Load the page in a real browser; count images that decoded and read back a table cell."""
    out, _ = study_run
    script = (
        "<script>window.onload=()=>{const imgs=[...document.images];"
        "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;"
        "document.title='IMAGES '+ok+'/'+imgs.length+' CELLS '+document.querySelectorAll('td').length;}</script>"
    )
    page = (out / "report.html").read_text().replace("</body>", script + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    m = re.search(r"<title>IMAGES (\d+)/(\d+) CELLS (\d+)</title>", res.stdout)
    assert m, res.stderr[-2000:]
    ok, total, cells = map(int, m.groups())
    assert total >= 6 and ok == total
    assert cells > 20


def test_config_defaults_round_trip_and_errors(tmp_path):
    cfg = default_config()
    import tomllib

    assert tomllib.loads(dump_config(cfg)) == cfg
    quick = load_config(quick=True)
    assert quick["pretrain"]["epochs"] == QUICK_OVERRIDES["pretrain"]["epochs"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[data]\nsorce = 'x'\n")
    with pytest.raises(ValueError, match="unknown config key 'data.sorce'"):
        load_config(bad)
    bad.write_text("[data\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)
    r = CliRunner().invoke(app, ["study", "--print-config"])
    assert r.exit_code == 0 and r.output == DEFAULT_TOML
