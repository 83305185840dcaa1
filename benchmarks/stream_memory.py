"""Peak memory of one pre-training epoch (or one embedding pass) at two dataset sizes.

For each size ``N`` (default 20 000 and 200 000 images of 1x32x32, uint8) the
images are written as a ``.npy`` file in a temporary folder (in chunks, so
writing does not hold them either), then a fresh Python process runs one
pre-training epoch of a small ``convae`` (1x32x32, widths 8-16, latent 32)
with :func:`aelab.tasks.run_pretrain` and reports its memory:

- ``stream``: ``run_pretrain(..., stream=True)``: the ``.npy`` stays a memory
  map and each batch reads its rows (``aelab.data.ImageRows``).
- ``in-memory``: the comparison, the same call without ``stream``: the
  dataset is split into in-memory copies, as before streaming existed.

Memory is sampled every 20 ms from ``/proc/self/status``:

- ``anon MB``: peak anonymous resident memory (heap, tensors): what must fit
  in RAM. This is the number that must not grow with ``N`` when streaming.
- ``file MB``: peak file-backed resident memory: pages of the memory map the
  kernel keeps cached. They are reclaimable (dropped under memory pressure),
  so they grow with ``N`` only while RAM is free.

The ratio column is ``anon`` at the larger size over ``anon`` at the smaller.

With ``--task embed`` the child encodes every image with an untrained
checkpoint of the same model, with a 256-dimensional latent so the latents
(1 KiB an image) outweigh the rest, through :func:`aelab.tasks.run_embed`:

- ``stream``: ``--stream`` into a folder of shards of ``--shard-size`` rows:
  one shard and one batch of latents in memory at a time.
- ``in-memory``: the comparison, into one ``.npz``: every latent in memory.

Usage::

    PYTHONPATH=src python benchmarks/stream_memory.py            # 20k and 200k
    PYTHONPATH=src python benchmarks/stream_memory.py --sizes 2000 20000
    PYTHONPATH=src python benchmarks/stream_memory.py --task embed --sizes 10000 100000
    PYTHONPATH=src python benchmarks/stream_memory.py --smoke --out /tmp/smoke.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from _results import add_arguments, mode_of, table, write_results

_CHILD_FLAG = "--child"


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class _Peak:
    """Sample anonymous and file-backed RSS on a thread; keep the maxima (MB)."""

    def __init__(self, every: float = 0.02) -> None:
        self.anon = self.file = 0.0
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.anon = max(self.anon, _status_kb("RssAnon") / 1024)
        self.file = max(self.file, _status_kb("RssFile") / 1024)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self._every)

    def __enter__(self) -> _Peak:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def write_npy(path: Path, n: int, size: int = 32, chunk: int = 10_000) -> None:
    """``n`` random-square images (n, size, size) uint8, written chunk by chunk."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size))
    rng = np.random.default_rng(0)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        block = np.zeros((m, size, size), dtype=np.uint8)
        side = rng.integers(4, size // 2, m)
        rc = rng.integers(0, size // 2, (m, 2))
        for i in range(m):
            r, c, w = rc[i, 0], rc[i, 1], side[i]
            block[i, r : r + w, c : c + w] = 255
        out[s : s + m] = block
    out.flush()
    del out


def child(npy: str, stream: bool, batch_size: int, workers: int) -> None:
    import torch

    from aelab.tasks import run_pretrain

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    overrides = {"in_channels": 1, "image_size": 32, "widths": (8, 16), "latent_dim": 32,
                 "head_hidden": 32}  # fmt: skip
    with tempfile.TemporaryDirectory() as out, _Peak() as peak:
        t0 = time.perf_counter()
        res = run_pretrain(
            npy, out, model="convae", epochs=1, batch_size=batch_size, val_fraction=0.01,
            device="cpu", progress=False, model_overrides=overrides, stream=stream,
            num_workers=workers,
        )  # fmt: skip
        seconds = time.perf_counter() - t0
    print(json.dumps({"anon": peak.anon, "file": peak.file, "seconds": seconds,
                      "n_train": res.n_train, "loss": res.train_loss}))  # fmt: skip


def child_embed(npy: str, stream: bool, batch_size: int, shard_size: int) -> None:
    import torch

    from aelab.models import create_model
    from aelab.tasks import run_embed
    from aelab.training import save_checkpoint

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    torch.manual_seed(0)
    overrides = {"in_channels": 1, "image_size": 32, "widths": (8, 16), "latent_dim": 256,
                 "head_hidden": 32}  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        ckpt = save_checkpoint(Path(out) / "ckpt", create_model("convae", **overrides),
                               model_name="convae")  # fmt: skip
        dest = Path(out) / ("latents" if stream else "latents.npz")
        with _Peak() as peak:
            t0 = time.perf_counter()
            res = run_embed(
                npy, ckpt, dest, batch_size=batch_size, device="cpu", progress=False,
                stream=stream, shard_size=shard_size if stream else None,
            )  # fmt: skip
            seconds = time.perf_counter() - t0
    print(json.dumps({"anon": peak.anon, "file": peak.file, "seconds": seconds,
                      "n_train": res.n, "loss": 0.0}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[20_000, 200_000])
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers when streaming")
    ap.add_argument("--modes", nargs="+", default=["stream", "in-memory"])
    ap.add_argument("--task", choices=["pretrain", "embed"], default="pretrain")
    ap.add_argument("--shard-size", type=int, default=8192, help="rows per shard (embed)")
    add_arguments(ap, "stream_memory")
    args = ap.parse_args()
    if args.smoke:
        args.sizes, args.batch_size, args.modes = [256, 512], 64, ["stream"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = Path(tmp) / f"images_{n}.npy"
            write_npy(path, n)
            for mode in args.modes:
                extra = args.workers if args.task == "pretrain" else args.shard_size
                cmd = [sys.executable, __file__, _CHILD_FLAG, str(path), mode,
                       str(args.batch_size), str(extra), args.task]  # fmt: skip
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                if out.returncode:
                    sys.exit(f"{mode} at N={n} failed:\n{out.stderr[-3000:]}")
                rows.append((n, mode, json.loads(out.stdout.strip().splitlines()[-1])))
            path.unlink()
    small, large = args.sizes
    if args.task == "pretrain":
        print(f"one pre-training epoch, 1x32x32 uint8 .npy, batch {args.batch_size}, "
              f"workers {args.workers}")  # fmt: skip
    else:
        print(f"aelab embed, 1x32x32 uint8 .npy, latent 256 (1 KiB an image), batch "
              f"{args.batch_size}; stream = --stream into shards of {args.shard_size} rows, "
              "in-memory = one .npz")  # fmt: skip
    print(f"{'N':>9} {'mode':>10} {'anon MB':>9} {'file MB':>9} {'time s':>8} {'anon ratio':>11}")
    cells: dict[tuple[int, str], str] = {}
    for n, mode, r in rows:
        ratio = ""
        if n == large:
            base = next(x for m_n, m, x in rows if m_n == small and m == mode)
            ratio = f"{r['anon'] / base['anon']:.2f}x"
        cells[(n, mode)] = f"{r['anon']:.0f} MB" + (f" ({ratio})" if ratio else "")
        print(f"{n:>9} {mode:>10} {r['anon']:>9.0f} {r['file']:>9.0f} {r['seconds']:>8.1f} "
              f"{ratio:>11}")  # fmt: skip
    print(
        f"(data size: {small * 1024 / 2**20:.0f} MB and {large * 1024 / 2**20:.0f} MB; "
        "anon = heap and tensors, file = cached pages of the memory map, reclaimable)"
    )
    names = {"stream": "`--stream`", "in-memory": "loaded in memory"}
    out = table(["images", *(names.get(m, m) for m in args.modes)],
                [[f"{n:,}", *(cells[(n, m)] for m in args.modes)] for n in args.sizes])  # fmt: skip
    write_results(args.out, "stream_memory", mode_of(args), tables={args.task: out},
                  data={"rows": [{"n": n, "mode": m, **r} for n, m, r in rows],
                        "batch_size": args.batch_size, "workers": args.workers})  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == _CHILD_FLAG:
        run = child if sys.argv[6] == "pretrain" else child_embed
        run(sys.argv[2], sys.argv[3] == "stream", int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
