"""The whole study on tiny data: every artefact, resume, the report in a real browser, and the
user's own data (1, 2, 3 or 10 classes, a TOML file with --data, RGB 64x64 with convae)."""

import base64
import csv
import io
import json
import re
import shutil
import subprocess
import tomllib

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from aelab.cli.main import app
from aelab.study import default_toml, dump_config, load_config
from aelab.study.config import QUICK_OVERRIDES, StudyConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = """
seed = 0
device = "cpu"
[data]
source = "{train}"
test = "{test}"
labels_per_class = 15
val_per_class = 10
[pretrain]
model = "convae_tiny"
epochs = 2
batch_size = 32
[finetune]
epochs = 3
batch_size = 16
[cluster]
n = 40
map = "pca"
[anomaly]
normal_class = 0
epochs = 2
min_steps = 0
batch_size = 32
max_anomalies = 40
model = "convae_tiny"
[reconstruct]
n = 4
"""

# The settings of a small study on any 16x16 gray data (the user's data comes with --data).
SMALL = """
device = "cpu"
[data]
labels_per_class = {lpc}
val_per_class = {vpc}
[pretrain]
model = "convae_tiny"
epochs = 1
batch_size = 16
[finetune]
epochs = 2
batch_size = 8
ablation = ["none"]
[cluster]
n = {n}
map = "pca"
{cluster}
[anomaly]
epochs = 1
min_steps = 0
batch_size = 16
model = "convae_tiny"
max_anomalies = 30
[reconstruct]
n = 2
"""


def _shapes_npz(path, n, seed, classes=3):
    from conftest import make_shapes

    images, labels, names = make_shapes(n, seed=seed)
    keep = labels < classes
    np.savez(path, images=images[keep], labels=labels[keep], class_names=np.array(names[:classes]))
    return path


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    _shapes_npz(tmp / "train.npz", 180, 0)
    _shapes_npz(tmp / "test.npz", 60, 1)
    cfg = tmp / "tiny.toml"
    cfg.write_text(TINY.format(train=tmp / "train.npz", test=tmp / "test.npz"))
    out = tmp / "run"
    r = CliRunner().invoke(app, ["study", str(cfg), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out, r.output


def _steps(out):
    return {p.stem for p in (out / "steps").glob("*.json")}


@pytest.mark.slow
def test_study_writes_every_artefact(study_run):
    out, output = study_run
    for rel in ("report.html", "submission.csv", "cluster/sweep.csv", "cluster/latents.npz",
                "config.toml", "pretrain/model.safetensors", "finetune-standard/metrics.csv",
                "finetune-none/metrics.csv", "anomaly/detector.json", "figures/ekm_panels.png",
                "figures/reconstructions.png", "figures/anomaly/roc.png"):  # fmt: skip
        assert (out / rel).is_file(), rel
    assert "report:" in output
    sub = (out / "submission.csv").read_text().splitlines()
    assert sub[0] == "id,label" and len(sub) == 61
    sweep = (out / "cluster" / "sweep.csv").read_text().splitlines()
    assert len(sweep) == 4  # header + the three alphas
    assert _steps(out) == {"pretrain", "finetune-standard", "finetune-none", "predict", "cluster",
                           "anomaly", "reconstruct"}  # fmt: skip


@pytest.mark.slow
def test_step_records_read_back_as_typed_results(study_run):
    from aelab.study.results import AnomalyStep, ClusterStep

    out, _ = study_run
    rec = json.loads((out / "steps" / "anomaly.json").read_text())["result"]
    step = AnomalyStep.from_json(rec)
    assert 0.0 <= step.evaluation.metrics.roc_auc <= 1.0
    assert AnomalyStep.from_json(step.to_json()) == step
    cluster = ClusterStep.from_json(
        json.loads((out / "steps" / "cluster.json").read_text())["result"]
    )
    assert cluster.result.k == 3 and len(cluster.result.sweep) == 3


@pytest.mark.slow
def test_report_holds_the_runs_numbers(study_run):
    out, _ = study_run
    page = (out / "report.html").read_text()
    anomaly = json.loads((out / "steps" / "anomaly.json").read_text())["result"]
    assert f"{anomaly['evaluation']['metrics']['roc_auc']:.4g}" in page
    cluster = json.loads((out / "steps" / "cluster.json").read_text())["result"]
    for row in cluster["result"]["sweep"]:
        assert ":".join(map(str, row["sizes"])) in page
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(uris) >= 6
    for u in uris:
        Image.open(io.BytesIO(base64.b64decode(u))).verify()
    # The anomaly section says how many held-out normals set the threshold and what it reached.
    fit, m = anomaly["fit"], anomaly["evaluation"]["metrics"]
    assert fit["n_calibration"] > 0
    assert f"set on {fit['n_calibration']} held-out normal images" in page
    assert f"false-positive rate of {m['fpr']:.3g}" in page
    assert f"target false-positive rate of {fit['target_fpr']:g}" in page
    assert max(map(len, _paragraphs(page))) <= MAX_PARAGRAPH


#: The longest paragraph a report section may hold (about a screen's width times eight lines).
MAX_PARAGRAPH = 600


def _paragraphs(page: str) -> list[str]:
    """The text of every <p> of a page, as a reader sees it."""
    import html

    return [html.unescape(re.sub(r"<[^>]+>", "", p)) for p in re.findall(r"<p[ >].*?</p>", page)]


def test_cluster_warnings_are_one_paragraph_with_an_example_and_a_link(study_run):
    import dataclasses

    from aelab.report import Report
    from aelab.report.study import _section_cluster
    from aelab.study.results import ClusterStep

    out, _ = study_run
    step = ClusterStep.from_json(json.loads((out / "steps" / "cluster.json").read_text())["result"])
    # The quick study's page held 130 such messages in one paragraph.
    log = tuple(f"the alpha sweep: EquilibriumKMeans: 1 centroid(s) had a vanishing total weight "
                f"and were relocated to the farthest sample(s): centroid 2 (total weight "
                f"{i}e-12) -> sample {i}" for i in range(130))  # fmt: skip
    r = step.result
    n_fits = len(r.search) + 1 + len(r.sweep)
    result = dataclasses.replace(
        r, n_warnings=130, n_fits=n_fits, warning_log=log,
        messages=tuple(w.partition(": ")[2] for w in log),
        files=(*step.result.files, out / "cluster" / "warnings.txt"),
    )  # fmt: skip
    rep = Report("t")
    _section_cluster(rep, dataclasses.replace(step, result=result), out)
    page = rep.render()
    (text,) = [p for p in _paragraphs(page) if "warning" in p]
    assert text.startswith(f"130 warnings in {n_fits} fits ({len(r.search)} of the alpha search, "
                           "the main fit, 3 of the sweep), 130 distinct messages")  # fmt: skip
    assert "For example: EquilibriumKMeans: 1 centroid(s)" in text and "-> sample 1 " not in text
    assert len(text) <= MAX_PARAGRAPH
    assert '<a href="cluster/warnings.txt">cluster/warnings.txt</a>' in page


@pytest.mark.parametrize("test", ["auto", "given"])
def test_the_plan_splits_once_and_never_scores_training_images(tmp_path, test):
    """Test, validation, labelled and anomaly images are disjoint, whether the test set is
    held out of the user's data (auto) or given as another file."""
    from aelab.study import make_plan

    src = _shapes_npz(tmp_path / "train.npz", 180, 0)
    over = {"data": {"source": str(src), "labels_per_class": 10, "val_per_class": 5},
            "pretrain": {"model": "convae_tiny"}, "cluster": {"n": 12}, "anomaly": {"max_anomalies": 20}}  # fmt: skip
    if test == "given":
        over["data"]["test"] = str(_shapes_npz(tmp_path / "test.npz", 60, 1))
    plan = make_plan(load_config(overrides=over))
    ids = {name: set(getattr(plan.splits, name).ids) for name in ("labeled", "val")}
    trained = set(plan.source.subset(plan.splits.unlabeled_index).ids)
    scored = set(plan.normal_eval.ids) | set(plan.anomalous_eval.ids)
    assert ids["labeled"] <= trained and not ids["val"] & trained
    assert set(plan.normal_train.ids) <= trained
    assert plan.pool is plan.test  # the anomaly and cluster images come from the test set
    if test == "auto":  # (a given test file has row ids of its own: compare only when held out)
        assert not set(plan.normal_train.ids) & scored
        test_ids = set(plan.test.ids)
        assert len(test_ids) == 36 and not test_ids & (trained | ids["val"])  # 20 % of 180
        assert scored <= test_ids and set(plan.cluster_subset.ids) <= test_ids
    assert plan.config.cluster.settings.k == 3 and plan.config.cluster.ratio == [2.0, 1.0, 1.0]


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_report_in_headless_chromium(study_run, tmp_path):
    """Load the page in a real browser; count images that decoded, table cells, the longest paragraph."""
    out, _ = study_run
    script = (
        "<script>window.onload=()=>{const imgs=[...document.images];"
        "const ok=imgs.filter(i=>i.complete&&i.naturalWidth>0).length;"
        "const longest=Math.max(0,...[...document.querySelectorAll('p')].map(p=>p.innerText.length));"
        "document.title='IMAGES '+ok+'/'+imgs.length+' CELLS '+document.querySelectorAll('td').length"
        "+' LONGEST '+longest;}</script>"
    )
    page = (out / "report.html").read_text().replace("</body>", script + "</body>")
    probe = tmp_path / "probe.html"
    probe.write_text(page)
    res = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         "--disable-background-networking", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    m = re.search(r"<title>IMAGES (\d+)/(\d+) CELLS (\d+) LONGEST (\d+)</title>", res.stdout)
    assert m, res.stderr[-2000:]
    ok, total, cells, longest = map(int, m.groups())
    assert total >= 6 and ok == total
    assert cells > 20
    # No paragraph runs over about a screen: the cluster warnings once filled one.
    assert 0 < longest <= MAX_PARAGRAPH


def test_config_defaults_round_trip_and_errors(tmp_path):
    cfg = StudyConfig()
    text = dump_config(cfg)
    assert load_config_text(tmp_path, text) == cfg
    quick = load_config(quick=True)
    assert quick.pretrain.epochs == QUICK_OVERRIDES["pretrain"]["epochs"]
    assert load_config_text(tmp_path, dump_config(quick)) == quick
    tomllib.loads(default_toml())
    bad = tmp_path / "bad.toml"
    for text, msg in (
        ("[data]\nsorce = 'x'\n", "unknown setting 'data.sorce'"),
        ("[data\n", "not valid TOML"),
        ("[pretrain]\nepochs = 'many'\n", "pretrain.epochs"),
        ("[pretrain]\nseed = 3\n", "set the top-level seed"),
        ("[finetune]\nlabels_per_class = 5\n", "data.labels_per_class"),
        ("[cluster]\nk = 5\n", "cluster.classes"),
        ("[finetune]\nwarp = 1\n", "unknown setting 'finetune.warp'"),
        ("[nope]\nx = 1\n", "unknown config section [nope]"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=re.escape(msg)):
            load_config(bad)
    r = CliRunner().invoke(app, ["study", "--print-config"])
    assert r.exit_code == 0 and r.output == default_toml()


def load_config_text(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return load_config(p)


# ----------------------------------------------------------------------------- the user's data


def _png_folder(root, classes, n, size=16, mode="L", seed=0):
    """A folder of images, one subfolder per class: class k is a bar at a k-dependent place."""
    rng = np.random.default_rng(seed)
    for k in range(classes):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 40, size=(size, size, 3 if mode == "RGB" else 1), dtype=np.uint8)
            row = (k * size) // max(classes, 1)
            a[row : row + max(1, size // classes), :, :] = 255
            Image.fromarray(a.squeeze() if mode == "L" else a, mode).save(
                root / f"c{k}" / f"im{i:03d}.png"
            )
    return root


def _study(tmp_path, data, toml, *extra):
    cfg = tmp_path / "study.toml"
    cfg.write_text(toml)
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["study", str(cfg), "--data", str(data), "--out", str(out), *extra])
    return r, out


def test_one_class_is_refused_before_any_training(tmp_path):
    data = _png_folder(tmp_path / "one", 1, 20)
    r, out = _study(tmp_path, data, SMALL.format(lpc=5, vpc=3, n=10, cluster=""))
    assert r.exit_code == 2, r.output
    assert "data.source" in r.output and "at least 2 classes" in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (out / "pretrain").exists()


def test_settings_that_do_not_fit_the_data_fail_at_once(tmp_path):
    data = _png_folder(tmp_path / "two", 2, 30)
    for cluster, msg in (('classes = [0, 1, 2]\nratio = [2, 1, 1]', "cluster.classes"),
                         ('classes = [0, 1]\nratio = [2, 1, 1]', "cluster.ratio")):  # fmt: skip
        r, out = _study(tmp_path, data, SMALL.format(lpc=5, vpc=3, n=10, cluster=cluster))
        assert r.exit_code == 2 and msg in r.output, r.output
        assert not (out / "pretrain").exists()
    r, out = _study(tmp_path, data, SMALL.format(lpc=50, vpc=3, n=10, cluster=""))
    assert r.exit_code == 2 and "data.labels_per_class" in r.output, r.output


def _check_on_users_data(out, names):
    """Every step used the user's images: ids, classes and the report say so."""
    res = json.loads((out / "steps" / "predict.json").read_text())["result"]
    assert set(res["prediction"]["class_names"]) == set(names)
    rows = list(csv.DictReader((out / "submission.csv").open()))
    assert rows and all(r["label"] in names for r in rows)
    assert not any(r["id"].startswith(("train-", "test-")) for r in rows)  # no Fashion-MNIST ids
    page = (out / "report.html").read_text()
    assert "fashion-mnist" not in page.lower() and "T-shirt" not in page


@pytest.mark.parametrize("classes", [2, 10])
def test_study_on_a_folder_of_2_or_10_classes(tmp_path, classes):
    """The issue's case: a TOML file and --data; the study runs on the user's data only."""
    data = _png_folder(tmp_path / "data", classes, 18 if classes == 10 else 30)
    cluster = "classes = [0, 1]\nratio = [2, 1]" if classes == 2 else ""
    r, out = _study(tmp_path, data, SMALL.format(lpc=4, vpc=3, n=12, cluster=cluster))
    assert r.exit_code == 0, r.output
    _check_on_users_data(out, [f"c{k}" for k in range(classes)])
    c = json.loads((out / "steps" / "cluster.json").read_text())["result"]
    assert c["result"]["k"] == min(classes, 3)
    assert sum(c["result"]["sizes"]) == sum(c["class_sizes"]) <= 12  # at most cluster.n


@pytest.mark.slow
def test_study_on_rgb_64x64_with_the_reference_model(tmp_path):
    data = _png_folder(tmp_path / "rgb", 2, 16, size=64, mode="RGB")
    toml = SMALL.format(lpc=4, vpc=2, n=6, cluster="").replace(
        'model = "convae_tiny"', 'model = "convae"'
    )
    toml = toml.replace("batch_size = 16", "batch_size = 8")
    r, out = _study(tmp_path, data, toml)
    assert r.exit_code == 0, r.output
    _check_on_users_data(out, ["c0", "c1"])
    pre = json.loads((out / "steps" / "pretrain.json").read_text())["result"]
    assert pre["model"] == "convae"
