"""Training speed: aelab's steps against a plain eager float32 loop, in the same run.

Two steps are timed for each model, as images per second through the step:

- **pre-training**: reconstruct a batch (MSE of decode(encode(x))).
- **fine-tuning**: aelab's default recipe (FixMatch, ``finetune_recipe("default")``):
  a labelled batch of B images and an unlabeled batch of mu*B images, the
  unlabeled ones seen twice (a weak view labelled without gradients, a strong
  view trained on). Images per second count labelled + unlabeled images.

Variants (each a fresh model; repeats interleaved, the best time counts, as
the machine may be shared):

- ``plain``: the loop a user writes by hand, float32, eager: gather uint8
  rows, scale to [0, 1], the same loss (and the same augmentation modules),
  zero_grad, backward, clip_grad_norm_, ``torch.optim.AdamW`` with PyTorch's
  default implementation, LambdaLR. No metrics, no checkpoints.
- ``aelab default``: ``pretrain`` / ``finetune`` with their defaults (``amp``
  and ``channels_last`` "auto", fused AdamW), ``progress=False``, no files.
- ``aelab fp32``, ``fp32 +channels-last``, ``bf16``, ``bf16 +channels-last``:
  the two options set by hand, to see what "auto" should choose here.
- ``aelab unfused``: the default with PyTorch's default AdamW.
- ``aelab batch x2``: the default with twice the batch (throughput only;
  the learning rate would scale with it, which does not change the time).
- ``aelab compiled`` (``--compile``): the default with the model's parts
  under ``torch.compile``; the compile time is shown apart, and "pays after"
  says how many images the run must train for the compile time to come back.

Also printed: the machine's GEMM peak (one large matmul, and the same work as
one large convolution, in float32 and in bfloat16, timed in this run; the
higher counts), the FLOPs per image of each step (counted from
the layer shapes with ``torch.utils.flop_counter.FlopCounterMode``: the
convolutions and matrix products of forward and backward), and the share of
the peak each variant reaches (against the bf16 peak when it runs in bf16);
the load average before and after, since a loaded machine slows everything.

Usage::

    PYTHONPATH=src python benchmarks/train_speed.py --quick               # convae_fmnist only, minutes
    PYTHONPATH=src python benchmarks/train_speed.py --threads 2 --compile  # the full table
    PYTHONPATH=src python benchmarks/train_speed.py --smoke --out /tmp/smoke.json  # seconds

A fine-tuning run here is exactly ``steps`` steps: the default recipe's floor
of 250 steps an epoch (``min_epoch_steps``) is turned off, or every variant
would train 250 steps whatever ``steps`` says (which is why ``--quick`` once
ran for more than 10 minutes) and the images per second would be miscounted.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from _results import add_arguments, mode_of, table, write_results
from aelab.data import ImageDataset, make_augment
from aelab.models import create_model
from aelab.runtime import bf16_speedup, native_bf16, resolve_device, resolve_speed
from aelab.training import PretrainConfig, finetune, finetune_recipe, pretrain
from aelab.training.semisup import make_strong_augment

Run = Callable[[nn.Module], None]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_rate(fn: Callable[[], Any], flop: float, device: torch.device, seconds: float) -> float:
    """FLOP/s of the fastest of repeated calls of ``fn`` (``flop`` each) for ``seconds``."""
    fn()
    _sync(device)
    best, end = math.inf, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return flop / best


def gemm_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.0) -> dict[str, float]:
    """FLOP/s of one large matmul and of one large convolution, each the fastest of repeats.

    The matmul is n = 1024 on CPU (large enough for the GEMM to reach its
    peak, small enough to repeat tens of times a second, so the best is an
    undisturbed one), 8192 on CUDA. The convolution (3x3, 256 channels,
    16 images of 16x16) is the same GEMM run by oneDNN, the library aelab's
    convolutions use; on some CPUs the two differ by 2x (MKL's float32 GEMM
    on AMD measured 65 GFLOP/s against oneDNN's 135 on one core).
    """
    n = 8192 if device.type == "cuda" else 1024
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    x = torch.randn(16, 256, 16, 16, generator=g).to(device, dtype)
    w = torch.randn(256, 256, 3, 3, generator=g).to(device, dtype)
    conv_flop = 2 * 16 * 256 * 256 * 9 * 16 * 16
    return {
        "matmul": _best_rate(lambda: a @ b, 2 * n**3, device, seconds),
        "conv": _best_rate(lambda: F.conv2d(x, w, padding=1), conv_flop, device, seconds),
    }


def update_peaks(
    peaks: dict[str, float], device: torch.device, seconds: float = 1.0
) -> dict[str, dict[str, float]]:
    """Measure the peaks again; ``peaks`` keeps the highest seen of each dtype.

    On a shared machine one measurement may fall in a busy moment; measured
    again before every table, the peak is the least disturbed of them.
    Returns this measurement, by dtype and kind (matmul, conv).
    """
    now = {}
    for kind, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        now[kind] = gemm_peak(device, dtype, seconds)
        peaks[kind] = max(peaks.get(kind, 0.0), *now[kind].values())
    return now


# ----------------------------------------------------------------------------- plain loops


def _plain_optimizer(model: nn.Module, steps: int) -> tuple[Any, Any]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / steps))
    return opt, sched


def _plain_update(model: nn.Module, loss: torch.Tensor, opt: Any, sched: Any) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()


def plain_pretrain(model: nn.Module, images: torch.Tensor, bs: int, device: torch.device) -> None:
    """The hand-written pre-training loop (the same work as aelab's step)."""
    model.to(device).train()
    steps = len(images) // bs
    opt, sched = _plain_optimizer(model, steps)
    order = torch.randperm(len(images))
    for b in range(steps):
        x = images[order[b * bs : (b + 1) * bs]].to(device).float().div_(255)
        loss = F.mse_loss(model.decode(model.encode(x)), x)
        _plain_update(model, loss, opt, sched)
    float(loss.detach())  # wait for the device, as aelab's epoch-end metrics do


def plain_fixmatch(
    model: nn.Module,
    labeled: ImageDataset,
    unlabeled: torch.Tensor,
    bs: int,
    mu: int,
    device: torch.device,
    threshold: float = 0.8,
) -> None:
    """The hand-written FixMatch loop: aelab's default fine-tuning step, float32, eager."""
    model.to(device).train()
    weak, strong = make_augment("weak"), make_strong_augment()
    steps = len(unlabeled) // (bs * mu)
    opt, sched = _plain_optimizer(model, steps)
    order, lab_order = torch.randperm(len(unlabeled)), torch.randperm(len(labeled))
    assert labeled.labels is not None
    for b in range(steps):
        li = lab_order[torch.arange(b * bs, (b + 1) * bs) % len(labeled)]
        x = labeled.images[li].to(device).float().div_(255)
        y = labeled.labels[li].to(device)
        u = unlabeled[order[b * bs * mu : (b + 1) * bs * mu]].to(device).float().div_(255)
        with torch.no_grad():
            probs = torch.softmax(model.classify(model.encode(weak(u).clamp(0, 1))), dim=1)
            conf, pseudo = probs.max(1)
            mask = (conf >= threshold).float()
        logits = model.classify(model.encode(torch.cat([weak(x), strong(u)]).clamp(0, 1)))
        unsup = (F.cross_entropy(logits[bs:], pseudo, reduction="none") * mask).mean()
        _plain_update(model, F.cross_entropy(logits[:bs], y) + unsup, opt, sched)
    float(unsup.detach())  # wait for the device


# ----------------------------------------------------------------------------- aelab runs


def aelab_pretrain(
    model: nn.Module, data: ImageDataset, bs: int, device: torch.device, **kw: Any
) -> None:
    cfg = PretrainConfig(epochs=1, batch_size=bs, progress=False, device=str(device), **kw)
    pretrain(model, data, config=cfg)


def aelab_finetune(
    model: nn.Module,
    labeled: ImageDataset,
    unlabeled: ImageDataset,
    bs: int,
    device: torch.device,
    **kw: Any,
) -> None:
    # min_epoch_steps=0: one epoch is one pass over ``unlabeled`` (the steps the table counts),
    # not the recipe's floor of 250 steps.
    cfg, augment = finetune_recipe(
        "default", epochs=1, batch_size=bs, progress=False, device=str(device),
        min_epoch_steps=0, **kw,
    )  # fmt: skip
    finetune(model, labeled, unlabeled=unlabeled, config=cfg, augment=make_augment(augment))


def _compiled(run: Run) -> Run:
    """``run`` with the model's ``encode``, ``decode`` and ``classify`` under ``torch.compile``.

    The methods are replaced on the instance, so the state dict keeps its
    keys (``nn.Module.compile()`` of the parts did not take effect here).
    """

    def go(model: nn.Module) -> None:
        for method in ("encode", "decode", "classify"):
            setattr(model, method, torch.compile(getattr(model, method)))
        run(model)

    return go


# ----------------------------------------------------------------------------- timing


def flops_per_image(run_one_step: Run, model: nn.Module, images_per_step: int) -> float:
    """FLOPs of forward and backward of one step, per image, from the layer shapes."""
    with FlopCounterMode(display=False) as counter:
        run_one_step(model)
    return counter.get_total_flops() / images_per_step


def time_variants(
    variants: dict[str, Run], name: str, repeats: int, device: torch.device
) -> dict[str, float]:
    """Best wall time of each variant (fresh model each time), repeats interleaved."""
    best = dict.fromkeys(variants, math.inf)
    for _ in range(repeats):
        for key, fn in variants.items():
            torch.manual_seed(0)
            model = create_model(name)
            _sync(device)
            t0 = time.perf_counter()
            fn(model)
            _sync(device)
            best[key] = min(best[key], time.perf_counter() - t0)
    return best


def time_compiled(run: Run, name: str, repeats: int, device: torch.device) -> tuple[float, float]:
    """(compile time, best run time) of ``run`` on one model compiled once."""
    torch.manual_seed(0)
    model = create_model(name)
    compiled = _compiled(run)
    t0 = time.perf_counter()
    compiled(model)  # compiles on its first step
    _sync(device)
    first = time.perf_counter() - t0
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(model)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return max(0.0, first - best), best


def _dtype_of(key: str, auto_amp: str | None) -> str:
    if "bf16" in key or ("fp32" not in key and "plain" not in key and auto_amp == "bf16"):
        return "bf16"
    return "fp32"


def print_table(
    title: str,
    n_images: int,
    times: dict[str, float],
    flops: float,
    peaks: dict[str, float],
    auto_amp: str | None,
    extra: dict[str, str],
) -> dict[str, Any]:
    """Print the table of one step; return it as a results table."""
    print(f"\n{title}: {flops / 1e6:.3g} MFLOP per image (forward + backward); GEMM peak "
          f"fp32 {peaks['fp32'] / 1e9:.1f}, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s")  # fmt: skip
    print(f"| {'variant':<26}|   img/s | vs plain | % of GEMM peak | note")
    print(f"|{'-' * 27}|---------|----------|----------------|------")
    rows = []
    for key, t in times.items():
        n = n_images * 2 if key == "aelab batch x2" else n_images
        ips = n / t
        kind = _dtype_of(key, auto_amp)
        share = 100 * flops * ips / peaks[kind]
        ratio = (n / t) / (n_images / times["plain"])
        print(
            f"| {key:<26}| {ips:>7.1f} | {ratio:>7.2f}x | {share:>8.1f} ({kind}) | "
            f"{extra.get(key, '')}"
        )
        rows.append([key, f"{ips:.1f}", f"{ratio:.2f}x", f"{share:.1f} ({kind})",
                     extra.get(key, "")])  # fmt: skip
    return table(["variant", "img/s", "vs plain", "% of GEMM peak", "note"], rows)


# ----------------------------------------------------------------------------- the two steps


def bench_pretrain(
    name: str, bs: int, steps: int, args: Any, peaks: dict[str, float]
) -> dict[str, Any]:
    device, c = args.device, create_model(name).config
    shape = (c.in_channels, c.image_size, c.image_size)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * bs * steps, *shape), dtype=torch.uint8, generator=g)
    data = ImageDataset(images[: bs * steps], None, [str(i) for i in range(bs * steps)])
    big = ImageDataset(images, None, [str(i) for i in range(len(images))])
    run = partial(aelab_pretrain, data=data, bs=bs, device=device)
    variants: dict[str, Run] = {
        "plain": partial(plain_pretrain, images=images[: bs * steps], bs=bs, device=device),
        **_options(run),
        "aelab batch x2": partial(aelab_pretrain, data=big, bs=2 * bs, device=device),
    }
    flops = flops_per_image(partial(plain_pretrain, images=images[:bs], bs=bs, device=device),
                            create_model(name), bs)  # fmt: skip
    plain_pretrain(create_model(name), images[: 2 * bs], bs, device)  # one-off set-up
    times = time_variants(variants, name, args.repeats, device)
    update_peaks(peaks, device, args.peak_seconds)
    extra = _compile_row(run, name, args, times, bs * steps)
    title = f"pre-training step, {name} {'x'.join(map(str, shape))}, batch {bs}, {steps} steps"
    return print_table(title, bs * steps, times, flops, peaks, _auto_amp(name, device), extra)


def bench_finetune(
    name: str, bs: int, steps: int, args: Any, peaks: dict[str, float]
) -> dict[str, Any]:
    device, c = args.device, create_model(name).config
    shape = (c.in_channels, c.image_size, c.image_size)
    cfg, _ = finetune_recipe("default")
    mu = cfg.unlabeled_ratio
    g = torch.Generator().manual_seed(0)
    n_unl = bs * mu * steps
    lab_images = torch.randint(0, 256, (1000, *shape), dtype=torch.uint8, generator=g)
    labeled = ImageDataset(lab_images, torch.arange(1000) % 10, [str(i) for i in range(1000)],
                           class_names=[str(k) for k in range(10)])  # fmt: skip
    unl = torch.randint(0, 256, (2 * n_unl, *shape), dtype=torch.uint8, generator=g)
    unlabeled = ImageDataset(unl[:n_unl], None, [f"u{i}" for i in range(n_unl)])
    twice = ImageDataset(unl, None, [f"u{i}" for i in range(2 * n_unl)])
    run = partial(aelab_finetune, labeled=labeled, unlabeled=unlabeled, bs=bs, device=device)
    variants: dict[str, Run] = {
        "plain": partial(
            plain_fixmatch, labeled=labeled, unlabeled=unl[:n_unl], bs=bs, mu=mu, device=device
        ),  # fmt: skip
        **_options(run),
        "aelab batch x2": partial(
            aelab_finetune, labeled=labeled, unlabeled=twice, bs=2 * bs, device=device
        ),  # fmt: skip
    }
    one_step = partial(plain_fixmatch, labeled=labeled, unlabeled=unl[: bs * mu], bs=bs, mu=mu,
                       device=device)  # fmt: skip
    flops = flops_per_image(one_step, create_model(name), bs * (1 + mu))
    one_step(create_model(name))  # one-off set-up
    times = time_variants(variants, name, args.repeats, device)
    update_peaks(peaks, device, args.peak_seconds)
    n_images = bs * (1 + mu) * steps
    extra = _compile_row(run, name, args, times, n_images)
    extra["plain"] = _augment_share(bs, mu, shape, device, times["plain"] / steps)
    title = (
        f"fine-tuning step (FixMatch, default recipe), {name} {'x'.join(map(str, shape))}, "
        f"batch {bs} labelled + {bs * mu} unlabeled, {steps} steps"
    )
    return print_table(title, n_images, times, flops, peaks, _auto_amp(name, device), extra)


def _options(run: Run) -> dict[str, Run]:
    return {
        "aelab default": run,
        "aelab fp32": partial(run, amp="none", channels_last=False),
        "aelab fp32 +channels-last": partial(run, amp="none", channels_last=True),
        "aelab bf16": partial(run, amp="bf16", channels_last=False),
        "aelab bf16 +channels-last": partial(run, amp="bf16", channels_last=True),
        "aelab unfused": partial(run, fused_adamw=False),
    }


def _compile_row(
    run: Run, name: str, args: Any, times: dict[str, float], n_images: int
) -> dict[str, str]:
    """Time the compiled default into ``times``; its note: compile time and break-even."""
    if not args.compile:
        return {}
    compile_s, best = time_compiled(run, name, args.repeats, args.device)
    times["aelab compiled"] = best
    saved_per_image = times["aelab default"] / n_images - best / n_images
    if saved_per_image > 0:
        pays = f"pays after {compile_s / saved_per_image:,.0f} images"
    else:
        pays = "never pays (not faster)"
    return {"aelab compiled": f"compile {compile_s:.0f} s, {pays}"}


def _augment_share(bs: int, mu: int, shape: tuple[int, ...], device: torch.device,
                   step_s: float) -> str:  # fmt: skip
    """Time of the weak and strong views of one step, as a share of the plain step."""
    weak, strong = make_augment("weak"), make_strong_augment()
    x, u = torch.rand(bs, *shape, device=device), torch.rand(bs * mu, *shape, device=device)
    best = math.inf
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        weak(u), weak(x), strong(u)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return f"augmentation {1e3 * best:.1f} ms of a {1e3 * step_s:.0f} ms step"


def _auto_amp(name: str, device: torch.device) -> str | None:
    n_params = sum(p.numel() for p in create_model(name).parameters())
    return resolve_speed("auto", "auto", device, parameters=n_params).amp


def _load() -> str:
    """The 1, 5 and 15 minute load averages (Linux), or "unknown"."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="convae_fmnist only, a third of the steps, 2 repeats (minutes)")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=None, help="default 2 (--quick) or 3")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--models", default=None, help="comma-separated registered models")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (minutes)")
    ap.add_argument("--device", default="auto")
    add_arguments(ap, "train_speed")
    args = ap.parse_args()
    # --smoke: the tiny model, two small steps, one repeat, short peak timings: seconds.
    args.peak_seconds = 0.05 if args.smoke else 1.0
    if args.smoke:
        args.models, args.repeats, args.compile = "convae_tiny", 1, False
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.compile:
        # A cold cache, so the compile time is what a first run pays (inductor keeps
        # compiled kernels on disk, and a warm cache hides most of it).
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="train-speed-inductor-")
    args.device = device = resolve_device(args.device)
    args.repeats = args.repeats or (2 if args.quick else 3)
    names = (args.models or ("convae_fmnist" if args.quick else
                             "convae_fmnist,convae_fmnist28,convae")).split(",")  # fmt: skip
    native, why = native_bf16(device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, best of {args.repeats}, load average {_load()}")  # fmt: skip
    print(f"bf16: {why}; a small conv step runs {bf16_speedup(device):.2f}x faster in bf16")
    peaks: dict[str, float] = {}
    now = update_peaks(peaks, device, args.peak_seconds)
    rates = ", ".join(f"{k} {d} {r / 1e9:.1f}" for d, v in now.items() for k, r in v.items())
    print(f"GEMM peak (GFLOP/s): {rates}; the higher of matmul and conv counts, measured "
          "again before each table")  # fmt: skip
    tables: dict[str, Any] = {}
    for name in names:
        n_params = sum(p.numel() for p in create_model(name).parameters())
        print(
            f"\n## {name}: {resolve_speed('auto', 'auto', device, parameters=n_params).describe()}"
        )
        big = create_model(name).config.image_size > 32  # convae 3x64x64: 10x the FLOPs
        pre_steps, ft_steps = (4, 2) if big else (8, 4)
        if not args.quick:
            pre_steps, ft_steps = 3 * pre_steps, 3 * ft_steps
        pre_bs, ft_bs = (64, 32) if big else (128, 64)
        if args.smoke:
            pre_steps, ft_steps, pre_bs, ft_bs = 2, 1, 16, 8
        tables[f"pretrain-{name}"] = bench_pretrain(name, pre_bs, pre_steps, args, peaks)
        tables[f"finetune-{name}"] = bench_finetune(name, ft_bs, ft_steps, args, peaks)
    print(f"\nload average at the end {_load()}")
    write_results(args.out, "train_speed", mode_of(args), tables=tables,
                  data={"device": str(device), "native_bf16": native, "peaks_flop_s": peaks,
                        "repeats": args.repeats, "load_average_end": _load()})  # fmt: skip


if __name__ == "__main__":
    main()
