"""Training speed: aelab's loop against a plain eager PyTorch loop, in the same run.

For ``convae`` (3x64x64) and ``convae_fmnist`` (1x32x32) this times one
pre-training epoch of ``steps`` batches, as images per second:

- ``plain``: the loop a user would write by hand — gather uint8 rows, scale to
  [0, 1], MSE of decode(encode(x)), zero_grad, backward, clip_grad_norm_,
  ``torch.optim.AdamW(model.parameters())`` (PyTorch's default implementation),
  LambdaLR step. No metrics, no checkpoints, no progress bar.
- ``aelab``: :func:`aelab.training.pretrain` with its defaults (fused AdamW,
  no weight decay on biases/norms, warm-up + cosine, clipping, per-epoch
  metrics), ``progress=False``, nothing written to disk.
- ``aelab unfused``: the same with ``fused_adamw=False`` (PyTorch's default
  AdamW, as the plain loop), to separate loop overhead from optimizer choice.
- ``aelab +augment``: with ``aelab.data.make_augment("standard")`` (or, when
  aelab.data has no make_augment, a torch flip + shift placeholder).
- ``aelab channels_last`` and ``aelab bf16``: the two speed options.

``convae_tiny`` (1x16x16, batch 32) is also timed: it is so small that the
loop's own per-step Python cost shows.

Each variant runs ``--repeats`` times, interleaved, and the best time counts
(the machine is shared, so the best run is the least disturbed one).

Usage::

    PYTHONPATH=src python benchmarks/train_speed.py --quick
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from aelab.data import ImageDataset
from aelab.models import create_model
from aelab.training import PretrainConfig, pretrain


def _placeholder_augment(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip and a shift of up to 10 % (bilinear), per image."""
    b = x.shape[0]
    flip = torch.rand(b, 1, 1, 1, device=x.device) < 0.5
    x = torch.where(flip, x.flip(-1), x)
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, :, 2] = (torch.rand(b, 2, device=x.device) - 0.5) * 0.2
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def get_augment() -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    try:
        from aelab.data import make_augment
    except ImportError:
        return _placeholder_augment, "placeholder flip+shift"
    return make_augment("standard"), 'aelab.data.make_augment("standard")'


def plain_loop(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int, device: torch.device
) -> None:
    """The hand-written baseline (same work as aelab's pre-training step)."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    steps = len(images) // batch_size
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps))
    order = torch.randperm(len(images))
    for b in range(steps):
        idx = order[b * batch_size : (b + 1) * batch_size]
        x = images[idx].to(device).float().div_(255)
        loss = F.mse_loss(model.decode(model.encode(x)), x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    float(loss.detach())  # wait for the device, as aelab's epoch-end metrics do


def aelab_loop(
    model: torch.nn.Module, data: ImageDataset, batch_size: int, device: torch.device, **kw
) -> None:
    augment = kw.pop("augment", None)
    cfg = PretrainConfig(epochs=1, batch_size=batch_size, progress=False, device=str(device), **kw)
    pretrain(model, data, config=cfg, augment=augment)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="few steps and 2 repeats (about 2-3 minutes on 2 cores)",
    )
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    from aelab.runtime import resolve_device

    device = resolve_device(args.device)
    repeats = args.repeats or (2 if args.quick else 3)
    # (model, batch size, steps)
    # convae_tiny (1x16x16, 23 k parameters) makes the loop's own per-step cost visible.
    if args.quick:
        configs = [("convae", 64, 6), ("convae_fmnist", 128, 16), ("convae_tiny", 32, 100)]
    else:
        configs = [("convae", 128, 12), ("convae_fmnist", 128, 40), ("convae_tiny", 32, 300)]
    augment, augment_name = get_augment()

    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, best of {repeats}"
    )
    print(f"augmentation: {augment_name}\n")
    header = f"| {'model':<14}| {'input':<8}| batch | steps | {'variant':<19}| {'img/s':>7} | vs plain | vs aelab |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, bs, steps in configs:
        probe = create_model(name)
        c = probe.config
        shape = (c.in_channels, c.image_size, c.image_size)
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (bs * steps, *shape), dtype=torch.uint8, generator=g)
        data = ImageDataset(images, None, [str(i) for i in range(len(images))])
        run = partial(aelab_loop, data=data, batch_size=bs, device=device)
        variants: dict[str, Callable[[torch.nn.Module], None]] = {
            "plain": partial(plain_loop, images=images, batch_size=bs, device=device),
            "aelab": run,
            "aelab unfused": partial(run, fused_adamw=False),
            "aelab +augment": partial(run, augment=augment),
            "aelab channels_last": partial(run, channels_last=True),
            "aelab bf16": partial(run, amp="bf16"),
        }
        best = dict.fromkeys(variants, math.inf)
        # A short untimed run first, so one-off kernel set-up is not charged to anyone.
        plain_loop(create_model(name), images[: 2 * bs], bs, device)
        for _ in range(repeats):
            for key, fn in variants.items():
                torch.manual_seed(0)
                model = create_model(name)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn(model)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[key] = min(best[key], time.perf_counter() - t0)
        for key, t in best.items():
            ips = bs * steps / t
            vs_plain = best["plain"] / t
            vs_aelab = "" if key == "plain" else f"{best['aelab'] / t:.2f}x"
            print(
                f"| {name:<14}| {'x'.join(map(str, shape)):<8}| {bs:>5} | {steps:>5} | {key:<19}| "
                f"{ips:>7.1f} | {vs_plain:>7.2f}x | {vs_aelab:>8} |"
            )


if __name__ == "__main__":
    main()
