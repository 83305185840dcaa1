"""The study as a user runs it: `aelab study`, timed step by step, with the figures its report shows.

Runs ``python -m aelab study [--quick] --out TMP`` in a subprocess on the
default data (Fashion-MNIST from the Debian package, or the subset bundled
with aelab when that is missing: the table says which), then reads the step
records the study wrote (``steps/*.json``: each step's wall time and result)
and writes one row: total and per-step wall time, each fine-tuning run's
test accuracy, which run wrote the submission, and the anomaly ROC AUC.

Usage::

    python benchmarks/study.py --quick          # the quick study (`make demo`)
    python benchmarks/study.py                  # the full study (tens of minutes on 2 cores)
    python benchmarks/study.py --smoke          # a study of 48 synthetic images: checks the script
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import REPO, add_arguments, mode_of, table, write_results

#: A study small enough for seconds: two classes of synthetic 16x16 images, convae_tiny.
SMOKE_TOML = """
seed = 0
device = "cpu"
[data]
labels_per_class = 4
val_per_class = 2
[pretrain]
model = "convae_tiny"
epochs = 1
[finetune]
epochs = 1
[finetune.default]
epochs = 1
min_epoch_steps = 2
batch_size = 8
[anomaly]
epochs = 1
min_steps = 0
[cluster]
n = 12
"""


def _smoke_data(folder: Path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 40, size=(48, 16, 16)).astype(np.uint8)
    labels = np.arange(48) % 2
    images[labels == 0, 4:12, 6:9] = 255  # vertical bar
    images[labels == 1, 6:9, 4:12] = 255  # horizontal bar
    path = folder / "bars.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(["vbar", "hbar"]))
    return path


def _command(args: argparse.Namespace, tmp: Path) -> list[str]:
    cmd = [sys.executable, "-m", "aelab", "study"]
    if args.smoke:
        (tmp / "smoke.toml").write_text(SMOKE_TOML)
        cmd += [str(tmp / "smoke.toml"), "--data", str(_smoke_data(tmp))]
    elif args.quick:
        cmd.append("--quick")
    return [*cmd, "--out", str(tmp / "run")]


def _read_steps(run: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((run / "steps").glob("*.json"))}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="aelab study --quick (what make demo runs)")
    add_arguments(p, "study")
    args = p.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cmd = _command(args, tmp)
        start = time.perf_counter()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        total = time.perf_counter() - start
        if r.returncode != 0:
            sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
            raise SystemExit(f"error: the study failed (exit {r.returncode})")
        steps = _read_steps(tmp / "run")
        bundled = "using the subset bundled with aelab" in r.stderr
    predict = steps["predict"]["result"]
    accuracy = predict["test_accuracy"]
    auc = steps["anomaly"]["result"]["evaluation"]["metrics"]["roc_auc"]
    data = "synthetic 48 images" if args.smoke else (
        "bundled Fashion-MNIST subset" if bundled else "Fashion-MNIST (Debian package)")  # fmt: skip
    wall = {name: f"{s['wall_s']:.1f} s" for name, s in steps.items()}
    columns = ["study", "data", "wall time (process)", "pre-train", "fine-tune runs", "predict",
               "cluster", "anomaly", "test accuracy per run", "submitted by", "anomaly AUC"]  # fmt: skip
    finetunes = " + ".join(v for k, v in wall.items() if k.startswith("finetune-"))
    row = ["aelab study" + (" --quick" if args.quick else ""), data, f"{total:.0f} s",
           wall["pretrain"], finetunes, wall["predict"], wall["cluster"], wall["anomaly"],
           ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()), str(predict["best_run"]),
           f"{auc:.3f}"]  # fmt: skip
    print(" | ".join(row))
    write_results(args.out, "study", mode_of(args), tables={"study": table(columns, [row])},
                  data={"steps": {k: {"wall_s": s["wall_s"]} for k, s in steps.items()},
                        "test_accuracy": accuracy, "roc_auc": auc})  # fmt: skip


if __name__ == "__main__":
    main()
