"""Issue #19, the path guard: no output lands in an input, a checkpoint, a detector or another
command's folder; --overwrite replaces only the same command's earlier output; --name is one
folder name; refusals are one line with exit 2 and leave nothing behind. Then a property test
over layouts of data, runs, checkpoints and commands."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import invoke
from conftest import one_line_error as refused

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--device", "cpu"]
TRAIN = ["--model", "convae_tiny", "--epochs", "1", "--set", "batch_size=8", *FAST]
STUDY_TOML = """
seed = 0
device = "cpu"
[data]
labels_per_class = 2
val_per_class = 2
[pretrain]
model = "convae_tiny"
epochs = 1
"""


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (hidden ones too) by relative path, as a hash of its bytes."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _image_folder(root: Path) -> None:
    """d3: three classes of twelve 16x16 gray PNGs each."""
    from conftest import make_shapes

    images, labels, _ = make_shapes(36)
    for i, (img, k) in enumerate(zip(images, labels, strict=True)):
        (root / f"c{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / f"c{k}" / f"{i}.png")


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """d3 (data), R1/pretrain and R1/finetune (the documented flow), DET (a detector), lat.npz."""
    root = tmp_path_factory.mktemp("guard")
    _image_folder(root / "d3")
    # The documented flow: pretrain into RUN, then finetune from RUN/pretrain into RUN.
    r = invoke("pretrain", root / "d3", "--out", root / "R1", *TRAIN)
    assert r.exit_code == 0, r.output
    r = invoke("finetune", root / "d3", "--init", root / "R1" / "pretrain", "--out", root / "R1",
               "--recipe", "plain", "--set", "val_per_class=2", *TRAIN)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("anomaly", "fit", root / "d3", "--normal-class", "c0", "--out", root / "DET",
               *TRAIN, "--set", "min_steps=0")  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("embed", root / "d3", "--ckpt", root / "R1" / "finetune", "--out", root / "lat.npz",
               *FAST)  # fmt: skip
    assert r.exit_code == 0, r.output
    (root / "tiny.toml").write_text(STUDY_TOML)
    return root


@pytest.fixture
def lay(layout, tmp_path):
    """A fresh copy of the layout for one test."""
    root = tmp_path / "lay"
    shutil.copytree(layout, root)
    return root


def test_the_documented_flow_left_marked_runs_and_no_lock(layout):
    for run, command in (("R1/pretrain", "pretrain"), ("R1/finetune", "finetune"),
                         ("DET", "anomaly fit")):  # fmt: skip
        from aelab.tasks.outputs import folder_command

        assert folder_command(layout / run) == command
    assert not list(layout.rglob(".aelab.lock")) and not list(layout.rglob("*.tmp"))
    assert not (layout / "R1" / "aelab-output.json").exists()  # RUN itself is no run folder


IN_THE_DATA = [
    ("predict", "--ckpt", "R1/finetune"),
    ("evaluate", "--ckpt", "R1/finetune"),
    ("reconstruct", "--ckpt", "R1/finetune"),
    ("anomaly", "score", "--detector", "DET"),
]


@pytest.mark.parametrize(
    "command", IN_THE_DATA, ids=lambda c: c[0] if c[0] != "anomaly" else "score"
)
def test_no_output_over_an_image_of_the_input_folder(lay, command):
    before = tree(lay)
    *cmd, opt, ref = command
    r = invoke(*cmd, lay / "d3", opt, lay / ref, "--out", lay / "d3/c0/0.png", "--overwrite", *FAST)
    refused(r, "d3/c0/0.png", "inside the folder")
    assert tree(lay) == before


def test_embed_writes_no_new_file_into_the_data(lay):
    before = tree(lay)
    r = invoke("embed", lay / "d3", "--ckpt", lay / "R1/finetune", "--out", lay / "d3/c1/2.npz",
               *FAST)  # fmt: skip
    refused(r, "inside the folder")
    assert tree(lay) == before


@pytest.mark.parametrize(
    ("out", "words"),
    [("d3", "one of this command's inputs"), ("d3/figures", "inside the folder"),
     (".", "contains"), ("R1/finetune/study", "`aelab finetune` wrote")],
)  # fmt: skip
def test_a_study_never_writes_into_its_data_or_a_checkpoint(lay, out, words):
    before = tree(lay)
    r = invoke("study", lay / "tiny.toml", "--data", lay / "d3", "--out", lay / out)
    refused(r, words)
    assert tree(lay) == before


@pytest.mark.parametrize(
    "args",
    [("cluster", "lat.npz", "--k", "3", "--out", "R1/pretrain"),
     ("cluster", "lat.npz", "--k", "3", "--plot", "R1/finetune/x.png"),
     ("cluster", "lat.npz", "--k", "3", "--out", "DET", "--overwrite"),
     ("anomaly", "fit", "d3", "--normal-class", "c0", "--out", "R1/pretrain", *TRAIN),
     ("anomaly", "fit", "d3", "--normal-class", "c0", "--out", "R1/finetune/det", *TRAIN),
     ("finetune", "d3", "--out", "R1", "--name", "pretrain", "--overwrite", *TRAIN),
     ("predict", "d3", "--ckpt", "R1/finetune", "--out", "R1/pretrain/p.csv")],
    ids=["cluster-out", "cluster-plot", "cluster-det", "fit", "fit-inside", "finetune-over-pretrain",
         "predict-other-ckpt"],
)  # fmt: skip
def test_nothing_writes_into_a_folder_another_command_wrote(lay, args):
    before = tree(lay)
    args = [str(lay / a) if (lay / a.split("/")[0]).exists() and a != "c0" else a for a in args]
    r = invoke(*args)
    refused(r, "wrote")
    assert tree(lay) == before


@pytest.mark.parametrize("name", ["../../escaped", "ABS", "../../d3/c0", "..", "a/b"])
def test_name_is_one_folder_name(lay, name):
    name = str(lay.parent / "abs-name") if name == "ABS" else name  # an absolute --name
    before = tree(lay)
    r = invoke("finetune", lay / "d3", "--init", lay / "R1/pretrain", "--out", lay / "o/N01",
               "--name", name, *TRAIN)  # fmt: skip
    refused(r, "--name")
    assert tree(lay) == before and not (lay / "o").exists() and not (lay / "escaped").exists()
    assert not (lay.parent / "abs-name").exists()


def test_overwrite_replaces_only_the_same_commands_output(lay):
    out = lay / "out" / "p.csv"
    r = invoke("predict", lay / "d3", "--ckpt", lay / "R1/finetune", "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    first = out.read_bytes()
    # another command may not replace it, even with --overwrite
    r = invoke("anomaly", "score", lay / "d3", "--detector", lay / "DET", "--out", out,
               "--overwrite", *FAST)  # fmt: skip
    refused(r, "`aelab predict`")
    assert out.read_bytes() == first
    # the same command may
    r = invoke("predict", lay / "d3", "--ckpt", lay / "R1/finetune", "--out", out, "--overwrite",
               *FAST)  # fmt: skip
    assert r.exit_code == 0, r.output
    # a file no aelab command wrote is never replaced
    mine = lay / "out" / "mine.csv"
    mine.write_text("id,label\nmy,own\n")
    r = invoke("predict", lay / "d3", "--ckpt", lay / "R1/finetune", "--out", mine, "--overwrite",
               *FAST)  # fmt: skip
    refused(r, "no aelab record")
    assert mine.read_text() == "id,label\nmy,own\n"
    # a cluster folder: replaced by cluster, never by anomaly eval
    c = lay / "C"
    assert invoke("cluster", lay / "lat.npz", "--k", "2", "--out", c).exit_code == 0
    assert invoke("cluster", lay / "lat.npz", "--k", "3", "--out", c, "--overwrite").exit_code == 0
    r = invoke("anomaly", "eval", "--detector", lay / "DET", "--normal", lay / "d3",
               "--normal-class", "c0", "--anomalous", lay / "d3", "--out", c, "--overwrite", *FAST)  # fmt: skip
    refused(r, "`aelab cluster`")


def test_a_cluster_output_may_not_contain_its_features(lay):
    before = tree(lay)
    refused(invoke("cluster", lay / "lat.npz", "--k", "3", "--out", lay), "contains")
    assert tree(lay) == before


def test_a_refused_study_leaves_no_config_toml(lay):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    r = invoke("study", lay / "tiny.toml", "--data", lay / "d3", "--out", lay / "S", "--device",
               "cuda")  # fmt: skip
    refused(r, "cuda")
    assert not (lay / "S").exists()


def test_an_unwritable_out_names_no_temporary_file(lay):
    if not Path("/proc/self").exists():
        pytest.skip("needs /proc")
    r = invoke("predict", lay / "d3", "--ckpt", lay / "R1/finetune", "--out", "/proc/x.csv", *FAST)
    refused(r, "/proc/x.csv")
    assert ".tmp" not in r.output and "aelab.lock" not in r.output


# ----------------------------------------------------------------------------- the property


# Places in the layout an output may be drawn at or under.
PLACES = ["", "d3", "d3/c0", "d3/c0/0.png", "R1", "R1/pretrain", "R1/finetune",
          "R1/finetune/model.json", "DET", "DET/model", "lat.npz", "new"]  # fmt: skip
LEAVES = ["", "x", "sub/x"]
NAMES = ["ft", "finetune", "pretrain", "..", "../x", "../../d3/c0", "ABS", "a/b"]
# Which command wrote which part of the layout (the rest is data).
WRITTEN_BY = {"R1/pretrain": "pretrain", "R1/finetune": "finetune", "DET": "anomaly fit",
              "lat.npz": "embed"}  # fmt: skip


def _command(kind: str, out: Path, lay: Path, name: str, overwrite: bool) -> list[str]:
    d3, ft = lay / "d3", lay / "R1/finetune"
    name = str(lay.parent / "abs") if name == "ABS" else name  # an absolute --name
    ext = {"predict": ".csv", "evaluate": ".json", "reconstruct": ".png", "score": ".csv",
           "embed": ".npz", "plot": ".png"}.get(kind, "")  # fmt: skip
    o = str(out) + ext if ext and out.name == "x" else str(out)
    args = {
        "predict": ["predict", d3, "--ckpt", ft, "--out", o, *FAST],
        "evaluate": ["evaluate", d3, "--ckpt", ft, "--out", o, *FAST],
        "reconstruct": ["reconstruct", d3, "--ckpt", ft, "--out", o, "--n", "2", *FAST],
        "score": ["anomaly", "score", d3, "--detector", lay / "DET", "--out", o, *FAST],
        "embed": ["embed", d3, "--ckpt", ft, "--out", o, *FAST],
        "cluster": ["cluster", lay / "lat.npz", "--k", "2", "--out", o],
        "plot": ["cluster", lay / "lat.npz", "--k", "2", "--plot", o],
        "finetune": ["finetune", d3, "--init", lay / "R1/pretrain", "--out", o, "--name", name,
                     "--recipe", "plain", "--set", "val_per_class=2", *TRAIN],
    }[kind]  # fmt: skip
    return [str(a) for a in args] + (["--overwrite"] if overwrite else [])


COMMAND_OF = {"predict": "predict", "evaluate": "evaluate", "reconstruct": "reconstruct",
              "score": "anomaly score", "embed": "embed", "cluster": "cluster", "plot": "cluster",
              "finetune": "finetune"}  # fmt: skip


@settings(
    max_examples=30, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(
    kind=st.sampled_from(sorted(COMMAND_OF)),
    place=st.sampled_from(PLACES),
    leaf=st.sampled_from(LEAVES),
    name=st.sampled_from(NAMES),
    overwrite=st.booleans(),
)
def test_no_command_changes_an_input_or_another_commands_files(
    layout, tmp_path_factory, kind, place, leaf, name, overwrite
):
    lay = tmp_path_factory.mktemp("prop") / "lay"
    shutil.copytree(layout, lay)
    before = tree(lay)
    out = lay / place / leaf if leaf else lay / place
    r = invoke(*_command(kind, out, lay, name, overwrite))
    assert r.exit_code in (0, 2), (r.exit_code, r.output, r.exception)
    after = tree(lay)
    if r.exit_code == 2:
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), r.output
        assert after == before, r.output  # a refusal leaves nothing behind
        return
    # Nothing in the data changed; another command's files neither (the same command may
    # replace its own earlier output, with --overwrite).
    mine = COMMAND_OF[kind]
    protected = {
        p for p in before
        if not any(p.startswith(k) and WRITTEN_BY[k] == mine for k in WRITTEN_BY)
    }  # fmt: skip
    changed = {p for p in before if after.get(p) != before[p]}
    assert not changed & protected, (r.output, sorted(changed & protected))
    if kind not in ("cluster", "plot"):  # the commands that read d3 add no file to it
        assert not any(p.startswith("d3/") for p in set(after) - set(before)), r.output
    assert not list(lay.rglob(".aelab.lock")), r.output  # the lock went with the command


def test_folders_older_than_the_record_are_known_by_their_markers(tmp_path):
    import json

    from aelab.tasks.outputs import folder_command

    marks = {
        "run": ("run.json", {"command": "finetune", "aelab": "0.1.0"}, "finetune"),
        "det": ("detector.json", {"threshold_": 0.5}, "anomaly fit"),
        "ckpt": ("model.json", {"model": "convae_tiny"}, "checkpoint"),
        "stray": ("run.json", {"command": "make"}, None),  # another tool's run.json
    }
    for folder, (name, content, _) in marks.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text(json.dumps(content))
    (tmp_path / "study" / "steps").mkdir(parents=True)
    (tmp_path / "study" / "config.toml").write_text("seed = 0\n")
    for folder, (_, _, command) in marks.items():
        assert folder_command(tmp_path / folder) == command, folder
    assert folder_command(tmp_path / "study") == "study"
    r = invoke("cluster", "unused.npy", "--k", "2", "--out", tmp_path / "study" / "c")
    refused(r, "`aelab study` wrote")
