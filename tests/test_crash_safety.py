"""Crash safety: a training run killed anywhere resumes to the weights of a run never killed.

Where the runs are stopped:

- at every failure point of a whole run (``aelab.files.failure_point``: each
  atomic write after its data and before its rename, each checkpoint commit
  and each file moved into place afterwards), where the testing hook
  ``AELAB_FAIL_AFTER_WRITES=N`` ends the process with ``os._exit``, as
  ``kill -9`` would;
- at random wall-clock times, by SIGKILL.

Each stopped run is then resumed with ``--resume`` and must end with the
weights, optimizer state and metrics of the uninterrupted run, and with no
temporary file or folder left in the run folder.

The uninterrupted reference is ``python -m aelab`` in a fresh interpreter. The
interrupted runs are children forked from one process that has imported aelab
(run as ``python tests/test_crash_safety.py``): each is its own OS process
running the real ``aelab`` command line and killed for real, but it does not
pay the seconds of importing torch, which would make a hundred kills too slow
for the suite.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aelab.files import FAIL_ENV, FAIL_EXIT_CODE
from aelab.models import create_model
from aelab.training import load_model, read_checkpoint_meta, save_checkpoint
from aelab.training.checkpoint import load_weights
from aelab.training.commit import COMMITTED, STAGING, recover, staged_unit

SRC = Path(__file__).resolve().parents[1] / "src"
TESTS = Path(__file__).resolve().parent

PRETRAIN = ["pretrain", "{data}", "--out", "{out}", "--model", "convae_tiny", "--epochs", "2",
            "--batch-size", "16", "--device", "cpu", "--seed", "0"]  # fmt: skip
FINETUNE = ["finetune", "{data}", "--out", "{out}", "--model", "convae_tiny", "--recipe",
            "fixmatch", "--ema-decay", "0.99", "--epochs", "2", "--batch-size", "4",
            "--labels-per-class", "4", "--val-per-class", "4", "--unlabeled-ratio", "3",
            "--device", "cpu", "--seed", "0", "--set", "min_epoch_steps=0"]  # fmt: skip
ANOMALY = ["anomaly", "fit", "{data}", "--out", "{out}", "--normal-class", "0", "--model",
           "convae_tiny", "--epochs", "2", "--batch-size", "8", "--device", "cpu", "--seed", "0",
           "--set", "min_steps=0", "--set", "verbose=false"]  # fmt: skip
RANDOM_KILLS = 4
# The training run inside each command's --out, compared file by file.
RUN_FOLDER = {"pretrain": "pretrain", "finetune": "finetune", "anomaly": "train"}


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop(FAIL_ENV, None)
    return env


# ----------------------------------------------------------------------------- the kill server


def _fork_cli(argv: list[str], log: Path, fail: str | None) -> int:
    """Fork a child that runs ``aelab ARGV`` (output into ``log``); return its pid."""
    from aelab.cli.main import app

    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        if fail is not None:
            os.environ[FAIL_ENV] = fail
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1), os.dup2(fd, 2)
        app(args=argv, prog_name="aelab")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)


def _wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _serve(template: list[str], data: str, root: Path, kills: int, seed: int) -> list[dict]:
    """Stop ``aelab TEMPLATE`` at every failure point, then at ``kills`` random times; resume each."""
    argv = [a.replace("{data}", data) for a in template]
    records = []

    def run(out: Path, fail: str | None = None, kill_after: float | None = None) -> dict:
        args = [a.replace("{out}", str(out)) for a in argv]
        log = root / f"{out.name}.log"
        pid = _fork_cli(args, log, fail)
        if kill_after is not None:
            time.sleep(kill_after)
            os.kill(pid, signal.SIGKILL)
        rc = _wait(pid)
        resume_rc = _wait(_fork_cli([*args, "--resume"], log, None)) if rc != 0 else None
        return {"out": str(out), "rc": rc, "resume_rc": resume_rc, "log": str(log)}

    t0 = time.perf_counter()
    records.append({**run(root / "timing"), "kind": "timing"})
    duration = time.perf_counter() - t0
    for n in range(1, 1000):
        rec = run(root / f"point{n:03d}", fail=str(n))
        records.append({**rec, "kind": "point", "point": n})
        if rec["rc"] == 0:  # the run ended before reaching failure point n: all were tried
            break
    rng = random.Random(seed)
    for i in range(kills):
        at = rng.uniform(0.0, duration)
        records.append({**run(root / f"kill{i}", kill_after=at), "kind": "kill", "at": at})
    return records


# ----------------------------------------------------------------------------- the suite's side


def _run_files(run: Path) -> dict[str, Path]:
    return {p.name: p for p in run.iterdir()}


def _assert_same_run(got: Path, want: Path, what: str) -> None:
    """The files, weights, optimizer state and metrics of two runs agree; no leftovers."""
    hidden = sorted(str(p.relative_to(got)) for p in got.rglob(".*"))
    assert hidden == [], f"{what}: left behind {hidden}"
    g, w = _run_files(got), _run_files(want)
    assert sorted(g) == sorted(w), what
    for name in sorted(w):
        if name.endswith(".safetensors"):
            a, _ = load_weights(g[name])
            b, _ = load_weights(w[name])
            assert a.keys() == b.keys(), (what, name)
            for k in b:
                assert torch.allclose(a[k].double(), b[k].double(), rtol=0, atol=1e-6), (what, k)
    rows = [list(csv.DictReader(open(run / "metrics.csv"))) for run in (got, want)]
    drop = {"time_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows[0]] == [
        {k: v for k, v in r.items() if k not in drop} for r in rows[1]
    ], what


def _assert_same_detector(got: Path, want: Path, what: str) -> None:
    """A resumed ``anomaly fit`` saves the detector an uninterrupted one saves."""
    a, b = (json.loads((d / "detector.json").read_text()) for d in (got, want))
    assert a["threshold_"] == pytest.approx(b["threshold_"], abs=1e-6), what
    for name in ("decision_scores.npy", "calibration_scores.npy"):
        np.testing.assert_allclose(
            np.load(got / name), np.load(want / name), atol=1e-5, err_msg=what
        )
    x, _ = load_weights(got / "model" / "model.safetensors")
    y, _ = load_weights(want / "model" / "model.safetensors")
    assert all(torch.allclose(x[k].double(), y[k].double(), atol=1e-6) for k in y), what
    assert not [p for p in got.rglob(".*")], what


@pytest.fixture(scope="module")
def shapes_npz(tmp_path_factory) -> Path:
    from conftest import make_shapes

    images, labels, names = make_shapes(72)
    path = tmp_path_factory.mktemp("crash") / "shapes.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(names))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill server forks its runs")
@pytest.mark.parametrize(
    "template",
    [PRETRAIN, FINETUNE, ANOMALY],
    ids=["pretrain", "finetune-fixmatch-ema", "anomaly-fit"],
)
def test_killed_anywhere_resumes_to_the_uninterrupted_weights(template, shapes_npz, tmp_path):
    sub = RUN_FOLDER[template[0]]
    straight = tmp_path / "straight"
    args = [a.replace("{data}", str(shapes_npz)).replace("{out}", str(straight)) for a in template]
    done = subprocess.run(
        [sys.executable, "-m", "aelab", *args], env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "kills.json"
    seed = int(os.environ.get("AELAB_KILL_SEED", "0"))
    spec = {"template": template, "data": str(shapes_npz), "root": str(tmp_path),
            "kills": RANDOM_KILLS, "seed": seed, "results": str(results)}  # fmt: skip
    server = subprocess.run(
        [sys.executable, __file__, json.dumps(spec)], env=_env(), capture_output=True, text=True
    )
    assert server.returncode == 0, server.stderr[-3000:]
    records = json.loads(results.read_text())
    points = [r for r in records if r["kind"] == "point"]
    # Two epochs' checkpoints of 6 to 8 files, each a write and a move, and run.json.
    assert len(points) > 2 * (2 * 6 + 3), len(points)
    assert points[-1]["rc"] == 0 and records[0]["rc"] == 0
    for rec in records:
        if rec["kind"] == "point" and rec is not points[-1]:
            log = Path(rec["log"]).read_text()
            assert rec["rc"] == FAIL_EXIT_CODE, log[-2000:]
            assert f"stopped at failure point {rec['point']} " in log
        if rec["rc"] != 0:
            assert rec["resume_rc"] == 0, Path(rec["log"]).read_text()[-2000:]
        what = f"{rec['kind']} {rec.get('point', rec.get('at'))} (seed {seed})"
        _assert_same_run(Path(rec["out"]) / sub, straight / sub, what)
        if template[0] == "anomaly":
            _assert_same_detector(Path(rec["out"]), straight, what)
        shutil.rmtree(rec["out"])
    # Some random kills hit a running process (the others came after its end).
    assert any(r["rc"] == -signal.SIGKILL for r in records if r["kind"] == "kill")
    # And the stops hit every kind of point: inside a write, after a commit, after a move.
    stops = "\n".join(Path(r["log"]).read_text() for r in points[:-1])
    for kind in (f"{STAGING}/optimizer.safetensors)", ": committed)",
                 f"/{sub}/model.safetensors)", ": unit finished)"):  # fmt: skip
        assert kind in stops, kind


# ----------------------------------------------------------------------------- in one process


def _tiny(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("convae_tiny")


def _weights(run: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_weights(run / name)[0]


def test_a_save_that_fails_at_any_point_leaves_one_whole_checkpoint(tmp_path, monkeypatch):
    """Failure point n raises OSError (as a full disk would): before the commit the old
    checkpoint stays, after it the new one is what readers load and the next save finishes."""
    old, new = _tiny(0), _tiny(1)
    run = tmp_path / "run"
    save_checkpoint(run, old, model_name="convae_tiny", best=True)
    n = 0
    outcomes = []
    while True:
        n += 1
        monkeypatch.setenv(FAIL_ENV, f"{n}:raise")
        try:
            save_checkpoint(run, new, model_name="convae_tiny", model_meta={"tag": "new"})
        except OSError as e:
            assert f"failure point {n} " in str(e)
        else:
            break
        finally:
            monkeypatch.delenv(FAIL_ENV)
        model, meta = load_model(run, which="last")
        source = new if meta.get("tag") == "new" else old
        for k, v in source.state_dict().items():
            assert torch.equal(model.state_dict()[k], v), (n, k)
        assert read_checkpoint_meta(run)["model"] == "convae_tiny"
        # best.safetensors is not part of the new unit: it stays the old one throughout.
        key = "encoder.0.0.weight"
        assert torch.equal(_weights(run, "best.safetensors")[key], old.state_dict()[key])
        outcomes.append(meta.get("tag") == "new")
        # Recovery finishes a committed unit and discards an uncommitted one.
        recover(run)
        assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
        assert (load_model(run, which="last")[1].get("tag") == "new") == outcomes[-1]
        save_checkpoint(run, old, model_name="convae_tiny")  # the next round starts from old
    # Failure points: 2 files and the manifest written, the commit, 2 moves and the end.
    assert n == 8 and outcomes == [False] * 3 + [True] * 4
    assert not (run / STAGING).exists() and not (run / COMMITTED).exists()
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []


def test_a_unit_that_raises_changes_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_unit(tmp_path, clear=["a.txt"]) as unit:
        unit.path("b.txt").write_text("new")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with staged_unit(tmp_path, clear=["a.txt"]) as unit:
        unit.path("b.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]
    with pytest.raises(ValueError, match="plain file names"), staged_unit(tmp_path) as unit:
        unit.path("../c.txt")


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    # Import what the commands import, once, so that the forked children start at once
    # (the optimizer imports torch._dynamo, seconds, on first use).
    import torch._dynamo

    import aelab.cli.main
    import aelab.pipeline
    import aelab.training  # noqa: F401

    records = _serve(
        spec["template"], spec["data"], Path(spec["root"]), spec["kills"], spec["seed"]
    )
    Path(spec["results"]).write_text(json.dumps(records))
