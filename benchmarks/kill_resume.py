"""Kill ``aelab pretrain`` at random moments with SIGKILL, resume it, compare with a run never killed.

The user's measurement behind issue #14, as a script: a real ``python -m aelab
pretrain`` on 128 images of the bundled Fashion-MNIST subset with the
``convae_fmnist`` model (43 MB of weights, so a save of weights, best weights
and optimizer writes 160 MB and takes a good share of the run), 4 epochs of
batch size 16, on the CPU. Each trial

1. starts the run in a fresh folder and sends it SIGKILL at a random time
   after its training started (the progress bar of epoch 1 appeared), uniform
   in the window (default: from 0 to the time an uninterrupted run, measured
   first, takes from there to its end);
2. looks at what the kill left: no checkpoint yet, a save cut before its commit
   (``.aelab-staging``, or an old version's ``.*.tmp`` files), a save cut after
   its commit (``.aelab-committed``), or whole checkpoints only;
3. runs the same command with ``--resume`` (when the kill came before the end);
4. compares every ``.safetensors`` file with those of the uninterrupted run
   (``torch.equal``) and looks for files left behind (any name starting with
   a dot).

With ``--compare-src DIR`` the same kill times are also applied to the aelab
found in ``DIR`` (e.g. a checkout from before checkpoints were written as one
unit) and both rows are printed.

Usage::

    PYTHONPATH=src python benchmarks/kill_resume.py                  # 50 trials
    PYTHONPATH=src python benchmarks/kill_resume.py --trials 10 --seed 1
    git worktree add /tmp/old d8aa96a
    PYTHONPATH=src python benchmarks/kill_resume.py --compare-src /tmp/old/src
    PYTHONPATH=src python benchmarks/kill_resume.py --smoke --out /tmp/smoke.json   # seconds
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from _results import add_arguments, mode_of, table, write_results

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["pretrain", "fashion-mnist:train", "--model", "convae_fmnist", "--epochs", "4",
        "--batch-size", "16", "--max-images", "128", "--device", "cpu", "--seed", "0"]  # fmt: skip
#: --smoke: the tiny model, 2 epochs of 32 images, one trial; it shows the script works.
SMOKE_ARGS = ["pretrain", "fashion-mnist:train", "--model", "convae_tiny", "--epochs", "2",
              "--batch-size", "16", "--max-images", "32", "--device", "cpu", "--seed", "0"]  # fmt: skip


def _command(src: Path, out: Path, resume: bool) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    env.pop("AELAB_FAIL_AFTER_WRITES", None)
    cmd = [sys.executable, "-m", "aelab", *ARGS, "--out", str(out)]
    return [*cmd, "--resume"] if resume else cmd, env


def _run(src: Path, out: Path, *, resume: bool = False, kill_at: float | None = None) -> int:
    """Run the command to its end, or SIGKILL it ``kill_at`` seconds after its training starts.

    Training starts when the progress bar of epoch 1 appears on stderr, so the
    kill times do not depend on how long Python takes to import torch on a busy
    machine. Returns the exit status (negative: killed by that signal).
    """
    cmd, env = _command(src, out, resume)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    started = threading.Event()
    tail: list[bytes] = []

    def read() -> None:  # drain stderr (tqdm writes a lot), note when epoch 1 starts
        assert proc.stderr is not None
        for chunk in iter(lambda: proc.stderr.read1(4096), b""):  # type: ignore[union-attr]
            tail[:] = [b"".join([*tail, chunk])[-3000:]]
            if b"epoch 1/" in tail[0]:
                started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if kill_at is not None:
        while not started.wait(0.05):
            if proc.poll() is not None:  # ended before training started
                break
        else:
            time.sleep(kill_at)
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    reader.join()
    if kill_at is None and proc.returncode != 0:
        print(b"".join(tail).decode(errors="replace"), file=sys.stderr)
    return proc.returncode


def _training_time(src: Path, out: Path) -> float:
    """Seconds from the start of training to the end of an uninterrupted run."""
    cmd, env = _command(src, out, False)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    buf = b""
    while b"epoch 1/" not in buf:
        chunk = proc.stderr.read1(4096)  # type: ignore[attr-defined]
        if not chunk:
            break
        buf = (buf + chunk)[-100:]
    t0 = time.perf_counter()
    proc.stderr.read()
    assert proc.wait() == 0, "the uninterrupted run failed"
    return time.perf_counter() - t0


def _where(run: Path) -> str:
    """Where a kill left the run folder."""
    names = {p.name for p in run.iterdir()} if run.is_dir() else set()
    if ".aelab-committed" in names:
        return "save, after commit"
    if ".aelab-staging" in names or any(n.endswith(".tmp") for n in names):
        return "save, before commit"
    if "trainer_state.json" not in names:
        return "before 1st checkpoint"
    return "between saves"


def _same(run: Path, ref: Path) -> tuple[bool, list[str]]:
    """Whether every weights file equals the reference's; the names left behind."""
    import torch

    from aelab.training.checkpoint import load_weights

    left = sorted(str(p.relative_to(run)) for p in run.rglob(".*")) if run.is_dir() else []
    ref_files = sorted(p.name for p in ref.glob("*.safetensors"))
    if sorted(p.name for p in run.glob("*.safetensors")) != ref_files:
        return False, left
    for name in ref_files:
        a, _ = load_weights(run / name)
        b, _ = load_weights(ref / name)
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in b):
            return False, left
    return True, left


def _trials(src: Path, ref: Path, times: list[float], work: Path, tag: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for i, at in enumerate(times):
        out = work / f"{tag}{i:03d}"
        rc = _run(src, out, kill_at=at)
        where = "after the end" if rc == 0 else _where(out / "pretrain")
        counts[where] += 1
        resume_rc = _run(src, out, resume=True) if rc != 0 else 0
        same, left = _same(out / "pretrain", ref)
        same = same and resume_rc == 0
        counts["resumed"] += resume_rc == 0
        counts["identical"] += same
        counts["leftovers"] += bool(left)
        print(f"  {tag} {i + 1:3d}/{len(times)} kill at {at:5.1f} s: {where:22s} "
              f"resume rc {resume_rc}  identical {same}  left {left[:2]}", flush=True)  # fmt: skip
        shutil.rmtree(out, ignore_errors=True)
    return dict(counts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=50, help="kill-and-resume trials (default 50)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--window", type=float, nargs=2, metavar=("LO", "HI"),
                   help="kill times in seconds after the start of training "
                   "(default: 0 to the end of an uninterrupted run)")  # fmt: skip
    p.add_argument(
        "--compare-src", type=Path, help="another aelab source tree to kill the same way"
    )
    add_arguments(p, "kill_resume")
    args = p.parse_args()
    if args.smoke:
        global ARGS  # the command every run of this process starts
        ARGS, args.trials = SMOKE_ARGS, 1
    work = Path(tempfile.mkdtemp(prefix="aelab-kill-"))
    try:
        duration = _training_time(ROOT / "src", work / "ref")
        lo, hi = args.window or (0.0, duration)
        rng = random.Random(args.seed)
        times = [rng.uniform(lo, hi) for _ in range(args.trials)]
        print(f"uninterrupted run: {duration:.1f} s from the start of training to the end; "
              f"kills uniform in [{lo:.1f}, {hi:.1f}] s after the start of training")  # fmt: skip
        rows = {"this aelab": _trials(ROOT / "src", work / "ref" / "pretrain", times, work, "new")}
        if args.compare_src is not None:
            assert _run(args.compare_src, work / "ref_cmp") == 0, "the comparison run failed"
            rows[str(args.compare_src)] = _trials(
                args.compare_src, work / "ref_cmp" / "pretrain", times, work, "cmp"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cols = ["before 1st checkpoint", "save, before commit", "save, after commit", "between saves",
            "after the end", "resumed", "identical", "leftovers"]  # fmt: skip
    print()
    print("| aelab | trials | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    cells = []
    for name, c in rows.items():
        cells.append([name, str(args.trials), *(str(c.get(k, 0)) for k in cols)])
        print("| " + " | ".join(cells[-1]) + " |")
    write_results(args.out, "kill_resume", mode_of(args),
                  tables={"kills": table(["aelab", "trials", *cols], cells)},
                  data={"seconds_uninterrupted": duration, "window": [lo, hi], "seed": args.seed,
                        "command": ["python", "-m", "aelab", *ARGS]})  # fmt: skip
    if len(rows) == 2:
        a, b = (r.get("identical", 0) for r in rows.values())
        print(f"\nidentical after resume: {a}/{args.trials} vs {b}/{args.trials} "
              f"(ratio {a / max(b, 1):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
