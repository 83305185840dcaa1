"""Few labels on Fashion-MNIST: does pre-training pay off? All rows in one run.

Setting: ``convae_fmnist`` (the STUDY.md ``convae`` family at 1x32x32);
``--labels-per-class`` labelled training images per class (a seeded choice
from the 60,000 training images); pre-training on all 60,000 training images
without labels; test accuracy on the 10,000 test images.

Rows (test accuracy mean and standard deviation over ``--seeds`` seeds; a
seed changes the labelled images, the initialisation and the batches; the
pre-training is shared by all rows and seeds):

- ``scratch``            supervised from a random init, no augmentation
- ``scratch +aug``       the same with aelab's ``standard`` augmentation
- ``pretrained``         pre-trained encoder, supervised fine-tuning, no augmentation
- ``pretrained +aug``    the same with augmentation (recipe ``plain``)
- ``linear probe``       logistic regression on the frozen pre-trained latent
- ``aelab default``      ``aelab finetune``'s default recipe from the pre-trained encoder
- ``all labels``         (``--ceiling EPOCHS``) supervised from scratch on every
                         training image with its label: what the labels that
                         were held back would be worth, the ceiling of the rows above
- ``default, scratch``   (``--ablation``) the default recipe from a random init,
                         to separate what pre-training adds from what FixMatch adds

The supervised rows use recipe ``plain`` (``aelab finetune --recipe plain``);
``scratch`` rows give the encoder the full learning rate. Every row trains
with ``--amp`` (default auto: bf16 autocast where the hardware has native
bf16, float32 elsewhere; ``--no-bf16`` is ``--amp none``).

Usage::

    PYTHONPATH=src python benchmarks/fewlabel.py                 # the full table
    PYTHONPATH=src python benchmarks/fewlabel.py --quick         # a smaller check
    PYTHONPATH=src python benchmarks/fewlabel.py --smoke --out /tmp/smoke.json   # seconds
    PYTHONPATH=src python benchmarks/fewlabel.py --labels-per-class 10 --cache /tmp/fl-cache
    # the half-width variant, FixMatch at 12 epochs (the time of 3 for convae_fmnist)
    PYTHONPATH=src python benchmarks/fewlabel.py --model convae_fmnist_small \
        --pretrain-epochs 4 --default-epochs 12 --cache /tmp/fl-cache
    # one row with changed settings, and the all-labels ceiling
    PYTHONPATH=src python benchmarks/fewlabel.py --rows default --set lr=0.003 --cache /tmp/fl-cache
    PYTHONPATH=src python benchmarks/fewlabel.py --rows ceiling --ceiling 3 --seeds 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _results import add_arguments, mode_of, table, write_results
from aelab.data import ImageDataset, load_dataset, make_augment, split_dataset
from aelab.models import create_model
from aelab.runtime import seed_everything
from aelab.training import (
    PretrainConfig,
    encode,
    evaluate,
    finetune,
    finetune_recipe,
    load_model,
    pretrain,
)

MODEL = "convae_fmnist"  # --model replaces it


def _subsample(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    if n and n < len(ds):
        return ds.subset(np.sort(np.random.default_rng(seed).choice(len(ds), n, replace=False)))
    return ds


def _pretrained(train: ImageDataset, args: argparse.Namespace) -> tuple[Any, float, bool]:
    """The pre-trained model (from the cache when it holds this configuration) and its time."""
    pool = _subsample(train, args.pretrain_images, 0)
    pool = ImageDataset(images=pool.images, labels=None, ids=pool.ids)
    key = f"pretrain-{MODEL}-e{args.pretrain_epochs}-n{len(pool)}-lr{args.pretrain_lr}"
    if args.mask_ratio:
        key += f"-mask{args.mask_ratio}"
    cache = None if args.cache is None else Path(args.cache) / key
    if cache is not None and (cache / "model.json").is_file():
        model, _ = load_model(cache, device=args.device, which="last")
        return model, 0.0, True
    seed_everything(0)
    model = create_model(MODEL)
    config = PretrainConfig(
        epochs=args.pretrain_epochs,
        lr=args.pretrain_lr,
        batch_size=128,
        amp=args.amp,
        device=args.device,
        progress=args.progress,
        warmup_epochs=min(1.0, 0.2 * args.pretrain_epochs),
        mask_ratio=args.mask_ratio,
    )
    t0 = time.perf_counter()
    pretrain(model, pool, config=config, out_dir=cache, model_name=MODEL, overwrite=True)
    return model, time.perf_counter() - t0, False


def _fresh_from(state: dict[str, torch.Tensor] | None) -> Any:
    model = create_model(MODEL)
    if state is not None:
        model.load_state_dict(state)
    return model


def _finetune_row(
    recipe: str,
    state: dict[str, torch.Tensor] | None,
    labeled: ImageDataset,
    unlabeled: ImageDataset,
    test: ImageDataset,
    seed: int,
    args: argparse.Namespace,
    **overrides: Any,
) -> tuple[float, float]:
    config, augment = finetune_recipe(
        recipe, seed=seed, amp=args.amp, device=args.device, progress=args.progress, **overrides
    )
    seed_everything(seed)
    model = _fresh_from(state)
    t0 = time.perf_counter()
    finetune(
        model,
        labeled,
        unlabeled=unlabeled if config.uses_unlabeled else None,
        config=config,
        augment=None if augment == "none" else make_augment(augment),
    )
    seconds = time.perf_counter() - t0
    acc = evaluate(model, test, batch_size=1000, device=args.device)["accuracy"]
    return acc, seconds


def _linear_probe(
    state: dict[str, torch.Tensor], labeled: ImageDataset, test: ImageDataset, seed: int, args: Any
) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = _fresh_from(state)
    t0 = time.perf_counter()
    z = encode(model, labeled, batch_size=1000, device=args.device)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    clf.fit(z, labeled.labels.numpy())
    seconds = time.perf_counter() - t0
    zt = encode(model, test, batch_size=1000, device=args.device)
    return float((clf.predict(zt) == test.labels.numpy()).mean()), seconds


def _parse_sets(items: list[str]) -> dict[str, Any]:
    """``["threshold=0.9,lr=0.003", "augment=weak"]`` -> ``{"threshold": 0.9, "lr": 0.003, "augment": "weak"}``.

    Values are read as JSON where they parse (numbers, ``true``), else kept as strings.
    """
    import json

    out: dict[str, Any] = {}
    for item in items:
        for part in filter(None, item.split(",")):
            key, sep, value = part.partition("=")
            if not sep or not key:
                raise SystemExit(f"overrides are FIELD=VALUE, got {part!r}")
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
    return out


def main() -> None:
    global MODEL
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--model",
        default="convae_fmnist",
        help="registered grayscale model; "
        "the images are loaded at its size (convae_fmnist: 32, convae_fmnist28: 28)",
    )
    ap.add_argument("--labels-per-class", type=int, default=100, choices=(10, 100, 1000))
    ap.add_argument("--seeds", type=int, default=3, help="seeds per row (0, 1, ...)")
    ap.add_argument("--quick", action="store_true", help="a smaller check (minutes)")
    ap.add_argument("--pretrain-epochs", type=int, default=None)
    ap.add_argument("--pretrain-lr", type=float, default=2e-3)
    ap.add_argument(
        "--mask-ratio", type=float, default=0.0,
        help="masked-patch pre-training (aelab pretrain --mask-ratio); 0: plain reconstruction",
    )  # fmt: skip
    ap.add_argument(
        "--epochs", type=int, default=None,
        help="epochs of the supervised rows (default: 30,000 labelled images in all)",
    )  # fmt: skip
    ap.add_argument("--default-epochs", type=int, default=None, help="override the recipe's")
    ap.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a field of the default recipe (repeatable), e.g. --set threshold=0.9",
    )  # fmt: skip
    ap.add_argument("--ablation", action="store_true", help="also the default recipe from scratch")
    ap.add_argument(
        "--ceiling", type=int, default=0, metavar="EPOCHS",
        help="also train from scratch on all training labels for EPOCHS epochs (the ceiling)",
    )  # fmt: skip
    ap.add_argument("--rows", default="", help="comma-separated row keys to run (default: all)")
    ap.add_argument("--cache", default=None, help="folder to keep the pre-trained checkpoint in")
    ap.add_argument(
        "--amp", choices=("auto", "bf16", "none"), default="auto",
        help="mixed precision (default auto: bf16 only where the hardware has native bf16)",
    )  # fmt: skip
    ap.add_argument("--no-bf16", action="store_true", help="the same as --amp none")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--progress", action="store_true")
    add_arguments(ap, "fewlabel")
    args = ap.parse_args()
    if args.smoke:  # seconds on the bundled subset: the tiny model, one short epoch per row
        args.model, args.labels_per_class, args.seeds = "convae_tiny", 10, 1
        args.pretrain_epochs, args.epochs, args.default_epochs = 1, 1, 1
        args.set = [*args.set, "min_epoch_steps=0"]
    MODEL = args.model
    args.amp = "none" if args.no_bf16 else args.amp
    q = args.quick or args.smoke
    args.pretrain_epochs = args.pretrain_epochs or (1 if q else 2)
    args.pretrain_images = 500 if args.smoke else 10_000 if q else 0
    # The supervised rows see 30,000 labelled images (30 epochs at 100 labels
    # per class) whatever the number of labels, so the curve compares equal work.
    n_labeled = 10 * args.labels_per_class
    sup_epochs = args.epochs or math.ceil((10_000 if q else 30_000) / n_labeled)
    default_epochs = args.default_epochs or (1 if q else None)
    default_set = _parse_sets(args.set)
    n_unlabeled = 300 if args.smoke else 10_000 if q else 0
    n_test = 200 if args.smoke else 2_000 if q else 0
    seeds = list(range(1 if q and args.seeds == 3 else args.seeds))
    wanted = set(filter(None, args.rows.split(",")))

    t_all = time.perf_counter()
    size = create_model(MODEL).config.image_size
    train = load_dataset("fashion-mnist:train", image_size=size, channels=1, progress=False)
    test = _subsample(
        load_dataset("fashion-mnist:test", image_size=size, channels=1, progress=False), n_test, 0
    )

    rows: list[tuple[str, str, Any]] = [
        ("scratch", "from scratch", lambda *a: _finetune_row(
            "plain", None, *a, args, augment="none", encoder_lr_mult=1.0, epochs=sup_epochs)),
        ("scratch_aug", "from scratch +aug", lambda *a: _finetune_row(
            "plain", None, *a, args, encoder_lr_mult=1.0, epochs=sup_epochs)),
        ("pretrained", "pre-trained, fine-tuned", lambda *a: _finetune_row(
            "plain", state, *a, args, augment="none", epochs=sup_epochs)),
        ("pretrained_aug", "pre-trained, fine-tuned +aug", lambda *a: _finetune_row(
            "plain", state, *a, args, epochs=sup_epochs)),
        ("probe", "linear probe (frozen latent)", lambda lab, _u, te, s: _linear_probe(
            state, lab, te, s, args)),
        ("default", "aelab default (--recipe default)", lambda *a: _finetune_row(
            "default", state, *a, args, epochs=default_epochs, **default_set)),
    ]  # fmt: skip
    if args.ablation:
        rows.append(
            ("default_scratch", "default recipe from scratch", lambda *a: _finetune_row(
                "default", None, *a, args, **{**default_set, "epochs": default_epochs,
                "encoder_lr_mult": 1.0}))
        )  # fmt: skip
    if args.ceiling:
        everything = _subsample(train, args.pretrain_images, 0)
        rows.append(
            ("ceiling", f"all {len(everything)} labels, {args.ceiling} epochs",
             lambda _lab, u, te, s: _finetune_row(
                "plain", None, everything, u, te, s, args, encoder_lr_mult=1.0,
                epochs=args.ceiling))
        )  # fmt: skip
    if wanted:
        rows = [r for r in rows if r[0] in wanted]
    t_pre, cached = 0.0, False
    state: dict[str, torch.Tensor] | None = None
    if {k for k, _, _ in rows} & {"pretrained", "pretrained_aug", "probe", "default"}:
        model, t_pre, cached = _pretrained(train, args)
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        print(
            f"pre-training: {args.pretrain_epochs} epochs on {args.pretrain_images or len(train)} "
            f"images, {'from the cache' if cached else f'{t_pre:.0f} s'}",
            flush=True,
        )

    results: dict[str, dict[str, Any]] = {
        k: {"label": lab, "acc": [], "time": []} for k, lab, _ in rows
    }
    for seed in seeds:
        parts = split_dataset(
            train, labels_per_class=args.labels_per_class, val_fraction=0.0, seed=seed
        )
        unlabeled = _subsample(parts.unlabeled, n_unlabeled, seed)
        for key, label, fn in rows:
            acc, seconds = fn(parts.labeled, unlabeled, test, seed)
            results[key]["acc"].append(acc)
            results[key]["time"].append(seconds)
            print(f"  seed {seed}  {label:<34s} {acc:.4f}  {seconds:7.1f} s", flush=True)

    total = time.perf_counter() - t_all
    best_scratch = max(
        (statistics.mean(results[k]["acc"]) for k in ("scratch", "scratch_aug") if k in results),
        default=None,
    )
    print()
    print(
        f"Fashion-MNIST, {args.labels_per_class} labels per class, {len(test)} test images, "
        f"{len(seeds)} seed(s){' (quick)' if q else ''}, torch threads {torch.get_num_threads()}"
    )
    print("| row | test accuracy (mean ± sd) | vs best scratch | time per seed (s) |")
    print("|---|---|---|---|")
    cells = []
    for key, label, _ in rows:
        accs, times = results[key]["acc"], results[key]["time"]
        mean = statistics.mean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        gain = "" if best_scratch is None else f"{100 * (mean - best_scratch):+.1f} pt"
        results[key].update(mean=mean, sd=sd)
        cells.append([label, f"{100 * mean:.1f} ± {100 * sd:.1f}", gain,
                      f"{statistics.mean(times):.0f}"])  # fmt: skip
        print("| " + " | ".join(cells[-1]) + " |")
    cells.append(["pre-training (shared)", "", "", f"{t_pre:.0f}{' (cached)' if cached else ''}"])
    print("| " + " | ".join(cells[-1]) + " |")
    print(f"\ntotal wall time {total / 60:.1f} min")
    columns = ["row", "test accuracy (mean ± sd)", "vs best scratch", "time per seed (s)"]
    write_results(args.out, "fewlabel", mode_of(args), tables={"accuracy": table(columns, cells)},
                  data={"args": vars(args), "model": MODEL, "results": results,
                        "pretrain_s": t_pre, "total_s": total})  # fmt: skip


if __name__ == "__main__":
    main()
