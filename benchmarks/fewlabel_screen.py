"""Screen fine-tuning settings on Fashion-MNIST: one seed, a learning curve, the test accuracy.

Where ``fewlabel.py`` prints the table of record (every row, three seeds),
this script is for finding what to put in it: it fine-tunes with the default
recipe (or ``recipe=NAME``) plus the given overrides, from a pre-trained
checkpoint (or from scratch with ``--init none``), prints the validation
accuracy after every epoch (2,000 test images, for the curve only: the last
epoch's weights are kept, never the best), then the accuracy on all 10,000
test images. Each variant is compared with the recipe's own settings, run in
the same invocation, so both see the same machine.

Usage::

    PYTHONPATH=src python benchmarks/fewlabel.py --model convae_fmnist_small \\
        --pretrain-epochs 4 --cache CACHE --rows probe --seeds 1      # makes the checkpoint
    PYTHONPATH=src python benchmarks/fewlabel_screen.py \\
        --init CACHE/pretrain-convae_fmnist_small-e4-n60000-lr0.002 \\
        --set epochs=6 --variant lr=0.003 --variant threshold=0.9
    PYTHONPATH=src python benchmarks/fewlabel_screen.py --smoke --out /tmp/smoke.json   # seconds

``--set`` applies to every run (baseline included), ``--variant`` adds a run
with those overrides (comma-separated FIELD=VALUE). ``--jobs 2`` runs two
at a time, one thread each (on two cores that is more work per second than
one run on two threads). ``--student-epochs N`` adds a self-training round
after each run: a fresh copy of the initial model learns, with the ``plain``
recipe, from the labelled images and the run's pseudo-labels for all the
unlabeled ones (those above ``--student-threshold``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _results import add_arguments, mode_of, table, write_results
from fewlabel import _parse_sets as _parse  # benchmarks/ is on the path when run as a script

#: --smoke: the tiny model from scratch on the bundled subset, one short epoch.
SMOKE_SETS = ["epochs=1", "min_epoch_steps=0"]


def _initial_model(args: argparse.Namespace) -> Any:
    """The pre-trained checkpoint of ``--init``, or a fresh ``--model`` with ``--init none``."""
    from aelab.models import create_model
    from aelab.training import load_model

    if args.init == "none":
        return create_model(args.model)
    return load_model(args.init, device="cpu", which="last")[0]


def _run_one(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """One fine-tuning run in this process; returns its curve and test accuracy."""
    import numpy as np

    from aelab.data import load_dataset, make_augment, split_dataset
    from aelab.runtime import seed_everything
    from aelab.training import evaluate, finetune, finetune_recipe

    overrides = dict(overrides)
    recipe = overrides.pop("recipe", "default")
    size = _initial_model(args).config.image_size  # the images at the model's size
    train = load_dataset("fashion-mnist:train", image_size=size, channels=1, progress=False)
    test = load_dataset("fashion-mnist:test", image_size=size, channels=1, progress=False)
    n_val = min(2000, len(test))  # the bundled subset has 1,000 test images
    val = test.subset(np.sort(np.random.default_rng(0).choice(len(test), n_val, replace=False)))
    parts = split_dataset(
        train, labels_per_class=args.labels_per_class, val_fraction=0.0, seed=args.seed
    )
    config, augment = finetune_recipe(
        recipe, **{"seed": args.seed, "amp": "auto", "device": "cpu", "progress": False,
                   "restore_best": False, **overrides},
    )  # fmt: skip
    seed_everything(args.seed)
    model = _initial_model(args)
    t0 = time.perf_counter()
    res = finetune(
        model, parts.labeled, val=val,
        unlabeled=parts.unlabeled if config.uses_unlabeled else None, config=config,
        augment=None if augment == "none" else make_augment(augment),
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    acc = evaluate(model, test, batch_size=1000, device="cpu")["accuracy"]
    curve = [round(r["val_acc"], 4) for r in res.history]
    out = {"overrides": overrides, "recipe": recipe, "test_acc": acc, "seconds": seconds,
           "curve": curve}  # fmt: skip
    if args.student_epochs:
        out.update(_student(args, model, parts, test))
    return out


def _student(args: argparse.Namespace, teacher: Any, parts: Any, test: Any) -> dict[str, Any]:
    """A second self-training round: a fresh copy of the initial model learns, with the
    ``plain`` recipe, from the labelled images plus the teacher's confident labels
    for the unlabeled ones."""
    import torch

    from aelab.data import ImageDataset, make_augment
    from aelab.runtime import seed_everything
    from aelab.training import evaluate, finetune, finetune_recipe, predict

    t0 = time.perf_counter()
    pred, probs = predict(teacher, parts.unlabeled, batch_size=1000, device="cpu")
    keep = torch.from_numpy(probs.max(1) >= args.student_threshold)
    lab, unl = parts.labeled, parts.unlabeled
    data = ImageDataset(
        images=torch.cat([lab.images, unl.images[keep]]),
        labels=torch.cat([lab.labels, torch.from_numpy(pred)[keep].to(lab.labels.dtype)]),
        ids=[*lab.ids, *(i for i, k in zip(unl.ids, keep.tolist(), strict=True) if k)],
        class_names=lab.class_names,
    )
    config, augment = finetune_recipe(
        "plain", seed=args.seed, amp="auto", device="cpu", progress=False,
        epochs=args.student_epochs, encoder_lr_mult=1.0,
    )  # fmt: skip
    seed_everything(args.seed)
    student = _initial_model(args)
    finetune(student, data, config=config, augment=make_augment(augment))
    acc = evaluate(student, test, batch_size=1000, device="cpu")["accuracy"]
    return {"student_acc": acc, "student_seconds": time.perf_counter() - t0,
            "student_kept": int(keep.sum())}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--init", default=None, help="pre-trained run folder, or 'none' (scratch)")
    ap.add_argument("--model", default="convae_fmnist", help="model when --init none")
    ap.add_argument("--labels-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="FIELD=VALUE for every run")
    ap.add_argument("--variant", action="append", default=[], help="FIELD=VALUE[,...]: one run")
    ap.add_argument(
        "--student-epochs", type=int, default=0,
        help="then a self-training round: a student on the teacher's pseudo-labels (0: off)",
    )  # fmt: skip
    ap.add_argument("--student-threshold", type=float, default=0.0,
                    help="confidence a pseudo-label needs to be kept")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (one thread each if > 1)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    add_arguments(ap, "fewlabel_screen")
    args = ap.parse_args()
    if args.smoke:
        args.init, args.model, args.labels_per_class = "none", "convae_tiny", 10
        args.set, args.variant, args.student_epochs = [*args.set, *SMOKE_SETS], [], 0
    if args.init is None:
        ap.error("--init is required: a pre-trained run folder, or 'none' (from scratch)")
    common = _parse(args.set)
    if args.child is not None:  # a worker: run one configuration, print it as JSON
        variant = json.loads(args.child)
        result = _run_one(args, {**common, **variant})
        print("RESULT " + json.dumps({**result, "overrides": variant}))
        return
    runs = [{}] + [_parse([v]) for v in args.variant]
    env = dict(os.environ)
    if args.jobs > 1:
        env["OMP_NUM_THREADS"] = "1"
    base = [sys.executable, str(Path(__file__).resolve())]
    base += ["--init", args.init, "--model", args.model, "--seed", str(args.seed)]
    base += ["--labels-per-class", str(args.labels_per_class)]
    base += ["--student-epochs", str(args.student_epochs)]
    base += ["--student-threshold", str(args.student_threshold)]
    base += [x for s in args.set for x in ("--set", s)]
    results: list[dict[str, Any]] = []
    pending = list(runs)
    active: list[subprocess.Popen[str]] = []
    while pending or active:
        while pending and len(active) < max(1, args.jobs):
            cmd = [*base, "--child", json.dumps(pending.pop(0))]
            active.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
        proc = active.pop(0)
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a run failed (exit {proc.returncode}): {' '.join(proc.args)}")
        line = next(x for x in out.splitlines() if x.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT ") :]))
        r = results[-1]
        student = (
            f"; student {r['student_acc']:.4f} on {r['student_kept']} pseudo-labels "
            f"({r['student_seconds']:.0f} s)"
            if "student_acc" in r
            else ""
        )
        print(f"  {r['overrides'] or 'recipe as is'}: {r['test_acc']:.4f}{student}", flush=True)
    ref = next(r for r in results if not r["overrides"])
    print(f"\nFashion-MNIST, {args.labels_per_class} labels per class, seed {args.seed}, "
          f"init {Path(args.init).name}, common {common or '{}'}, jobs {args.jobs}")  # fmt: skip
    student = args.student_epochs > 0
    extra = " student accuracy | student time (s) |" if student else ""
    print(
        f"| variant | test accuracy | vs recipe | val curve (2,000 test images) | time (s) |{extra}"
    )
    print("|---|---|---|---|---|" + ("---|---|" if student else ""))
    rows = []
    for r in results:
        name = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "recipe as is"
        gain = 100 * (r["test_acc"] - ref["test_acc"])
        curve = " ".join(f"{v:.3f}" for v in r["curve"])
        rows.append([name, f"{100 * r['test_acc']:.2f} %", f"{gain:+.2f} pt", curve,
                     f"{r['seconds']:.0f}"])  # fmt: skip
        if student:
            rows[-1] += [f"{100 * r['student_acc']:.2f} %", f"{r['student_seconds']:.0f}"]
        print("| " + " | ".join(rows[-1]) + " |")
    columns = ["variant", "test accuracy", "vs recipe", "val curve", "time (s)"]
    columns += ["student accuracy", "student time (s)"] if student else []
    write_results(args.out, "fewlabel_screen", mode_of(args),
                  tables={"screen": table(columns, rows)},
                  data={"common": common, "seed": args.seed, "init": Path(args.init).name,
                        "results": results})  # fmt: skip


if __name__ == "__main__":
    main()
