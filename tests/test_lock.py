"""Issue #19, one lock per output: a second writer is refused in one line naming the host and
process that holds it; a holder killed with SIGKILL does not block the next run; a lock of
another host is never taken over; under torchrun only rank 0 locks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke
from conftest import one_line_error as refused

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def feats(tmp_path):
    path = tmp_path / "f.npy"
    np.save(path, np.random.default_rng(0).normal(size=(40, 2)))
    return path


def _write_lock(folder: Path, host: str, pid: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".aelab.lock"
    lock.write_text(json.dumps({"host": host, "pid": pid}))
    return lock


def test_two_writers_one_runs_the_other_is_refused_and_a_kill_does_not_block(tmp_path):
    from conftest import make_shapes

    images, labels, names = make_shapes(60)
    data = tmp_path / "d.npz"
    np.savez(data, images=images, labels=labels, class_names=np.array(names))
    out = tmp_path / "R"
    args = ["pretrain", str(data), "--out", str(out), "--model", "convae_tiny", "--set",
            "batch_size=8", "--device", "cpu"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    holder = subprocess.Popen(
        [sys.executable, "-m", "aelab", *args, "--epochs", "10000"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    lock = out / "pretrain" / ".aelab.lock"
    try:
        deadline = time.monotonic() + 120
        while not lock.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder never locked"
            time.sleep(0.05)
        # The second writer: one line naming the host and the process, nothing written.
        r = invoke(*args, "--epochs", "1", "--overwrite")
        refused(r, f"process {holder.pid}", socket.gethostname(), "being written")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock.exists()  # SIGKILL left it behind ...
    r = invoke(*args, "--epochs", "1", "--overwrite")  # ... and the next run takes it over
    assert r.exit_code == 0, r.output
    assert not lock.exists() and (out / "pretrain" / "model.safetensors").is_file()


def test_a_lock_of_another_host_is_never_taken_over(tmp_path, feats):
    lock = _write_lock(tmp_path / "C", "elsewhere-node-7", 1)
    before = lock.read_text()
    r = invoke("cluster", feats, "--k", "2", "--out", tmp_path / "C")
    refused(r, "process 1 on host elsewhere-node-7", "remove the lock")
    assert lock.read_text() == before
    assert sorted(p.name for p in (tmp_path / "C").iterdir()) == [".aelab.lock"]


def test_a_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path, feats):
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = _write_lock(tmp_path / "C", socket.gethostname(), gone.pid)
    r = invoke("cluster", feats, "--k", "2", "--out", tmp_path / "C")
    assert r.exit_code == 0, r.output
    assert not lock.exists() and (tmp_path / "C" / "labels.csv").is_file()


def test_a_file_output_and_the_study_take_the_lock(tmp_path, feats):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        host = socket.gethostname()
        plot = tmp_path / "map.png"
        (tmp_path / ".map.png.aelab.lock").write_text(
            json.dumps({"host": host, "pid": sleeper.pid})
        )
        refused(invoke("cluster", feats, "--k", "2", "--plot", plot), f"process {sleeper.pid}")
        assert not plot.exists()
        # The study holds its folder's lock over all its steps: a live holder refuses it first.
        _write_lock(tmp_path / "S", host, sleeper.pid)
        toml = tmp_path / "s.toml"
        toml.write_text('device = "cpu"\n[pretrain]\nmodel = "convae_tiny"\nepochs = 1\n')
        r = invoke("study", toml, "--data", feats, "--out", tmp_path / "S")
        refused(r, f"process {sleeper.pid}")
        assert sorted(p.name for p in (tmp_path / "S").iterdir()) == [".aelab.lock"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_only_rank_0_locks_and_records(tmp_path, monkeypatch):
    from aelab.tasks.outputs import output_folder

    monkeypatch.setenv("RANK", "1")
    with output_folder(tmp_path / "R" / "pretrain", "pretrain") as run:
        assert not run.exists()  # rank 1 checked, and wrote nothing: no folder, lock or record
    monkeypatch.setenv("RANK", "0")
    with output_folder(tmp_path / "R" / "pretrain", "pretrain") as run:
        assert sorted(p.name for p in run.iterdir()) == [".aelab.lock", "aelab-output.json"]
    # a block that fails and wrote nothing else leaves nothing, not even the folders it made
    with pytest.raises(RuntimeError), output_folder(tmp_path / "new" / "run", "pretrain"):
        raise RuntimeError("failed before any checkpoint")
    assert not (tmp_path / "new").exists()


def test_the_study_holds_its_folder_for_every_step(tmp_path):
    """Inside the study's claim its own steps write into the folder; another process may not."""
    from aelab.study import StudyConfig
    from aelab.study.run import study_output
    from aelab.tasks.outputs import output_folder

    cfg = StudyConfig()
    cfg.device = "cpu"
    out = tmp_path / "S"
    child = (
        "import sys; from aelab.tasks.outputs import output_folder\n"
        "try:\n    with output_folder(sys.argv[1], 'cluster'): pass\n"
        "except ValueError as e:\n    print(e); sys.exit(2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with study_output(cfg, out) as run:
        holder = json.loads((run / ".aelab.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with output_folder(run / "pretrain", "pretrain"):  # a step of this study: let in
            pass
        r = subprocess.run([sys.executable, "-c", child, str(run / "cluster")], env=env,
                           capture_output=True, text=True)  # fmt: skip
        assert r.returncode == 2 and "`aelab study` wrote" in r.stdout, r.stdout + r.stderr
    assert not (out / ".aelab.lock").exists()
