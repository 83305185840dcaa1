"""Augmentation throughput: aelab's ``standard`` preset against kornia's equivalent.

For each setting it times one augmentation call on a batch (median of
``--repeats``), kornia's AugmentationSequential with the same parameters, and
one training step of the matching model (forward, MSE loss, backward, Adam),
then prints the share of training throughput kept with augmentation on:
step / (step + augment). The training benchmark wants this >= 90 %.

    PYTHONPATH=src python benchmarks/bench_augment.py [--device cpu] [--repeats 7] [--threads N] [--no-train]
    PYTHONPATH=src python benchmarks/bench_augment.py --smoke --out /tmp/smoke.json   # seconds
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from _results import add_arguments, mode_of, table, write_results
from aelab.data import make_augment
from aelab.models import create_model
from aelab.runtime import resolve_device

SETTINGS = [  # (label, batch, channels, size, model)
    ("convae 256x3x64x64", 256, 3, 64, "convae"),
    ("convae_fmnist 256x1x32x32", 256, 1, 32, "convae_fmnist"),
]
SMOKE = [("convae_tiny 8x1x16x16", 8, 1, 16, "convae_tiny")]
COLUMNS = ["setting", "aelab ms", "img/s", "kornia ms", "kornia/aelab", "step ms", "kept"]


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _kornia_standard(channels: int) -> torch.nn.Module:
    import kornia.augmentation as K

    ops: list[torch.nn.Module] = [K.RandomHorizontalFlip(p=0.5)]
    if channels == 3:
        ops.append(K.ColorJitter(0.2, 0.2, 0.2, 0.05, p=1.0))
    else:
        ops.append(K.ColorJitter(0.2, 0.2, 0.0, 0.0, p=1.0))
    ops.append(K.RandomAffine(degrees=10.0, translate=(0.1, 0.1), scale=(0.9, 1.1), p=1.0))
    return K.AugmentationSequential(*ops)


def _train_step(name: str, x: torch.Tensor) -> Callable[[], None]:
    model = create_model(name).to(x.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        recon, _, _ = model(x)
        torch.nn.functional.mse_loss(recon, x).backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--train-repeats", type=int, default=2)
    ap.add_argument("--no-train", action="store_true", help="skip the training-step timing")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_arguments(ap, "bench_augment")
    args = ap.parse_args()
    if args.smoke:
        args.repeats, args.train_repeats = 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    header = f"{'setting':28} {'aelab ms':>9} {'img/s':>8} {'kornia ms':>10} {'kornia/aelab':>13} {'step ms':>9} {'kept':>6}"
    print(header)
    print("-" * len(header))
    rows = []
    for label, b, c, s, model in SMOKE if args.smoke else SETTINGS:
        x = torch.rand(b, c, s, s, device=device)
        ours = make_augment("standard")
        t_ours = _time(lambda: ours(x), args.repeats, device)  # noqa: B023
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = _kornia_standard(c).to(device)
            t_kornia = _time(lambda: theirs(x), args.repeats, device)  # noqa: B023
        if args.no_train:
            step_txt, kept_txt = "-", "-"
        else:
            t_step = _time(_train_step(model, x), args.train_repeats, device)
            step_txt, kept_txt = f"{t_step * 1e3:.0f}", f"{t_step / (t_step + t_ours):.1%}"
        rows.append([label, f"{t_ours * 1e3:.1f}", f"{b / t_ours:.0f}", f"{t_kornia * 1e3:.1f}",
                     f"{t_kornia / t_ours:.2f}", step_txt, kept_txt])  # fmt: skip
        print(
            f"{label:28} {t_ours * 1e3:9.1f} {b / t_ours:8.0f} {t_kornia * 1e3:10.1f} "
            f"{t_kornia / t_ours:13.2f} {step_txt:>9} {kept_txt:>6}"
        )
    write_results(args.out, "bench_augment", mode_of(args), tables={"augment": table(COLUMNS, rows)},
                  data={"device": str(device), "repeats": args.repeats})  # fmt: skip


if __name__ == "__main__":
    main()
