"""EKM time per iteration against N: in memory, mini-batch, and Dask on a local cluster.

One "iteration" is one pass over all N rows (D = 64, float32, k = 10):

- ``in-memory``: one evaluation of the sufficient statistics
  (``_ekm_kernels._sufficient_stats``), the work of one
  ``EquilibriumKMeans.fit`` iteration, on an array held in memory.
- ``mini-batch``: ``MiniBatchEquilibriumKMeans.partial_fit`` over every batch
  of 4096 rows once (one epoch).
- ``dask``: one evaluation of the per-chunk statistics reduced by Dask
  (``_ekm_dask.make_evaluate``) on a ``dask.distributed.LocalCluster`` of
  ``--workers`` processes. The rows are generated inside the workers chunk by
  chunk (``dask.array.random``), so no process ever holds more than a few
  chunks; the time of a generation-only pass over the same array is measured
  too and subtracted (``dask net``).

Memory: ``in-memory``/``mini-batch`` hold the whole array (N x 64 x 4 bytes);
for ``dask`` the table shows the largest worker's peak resident memory during
the pass, which stays near the chunk size whatever N. Sizes whose array
would exceed ``--max-memory-gb`` skip the two in-memory variants.

Usage::

    PYTHONPATH=src python benchmarks/ekm_scale.py                       # 1e4 .. 1e7
    PYTHONPATH=src python benchmarks/ekm_scale.py --sizes 10000 100000 1000000
    PYTHONPATH=src python benchmarks/ekm_scale.py --smoke --out /tmp/smoke.json   # seconds
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from _results import add_arguments, mode_of, table, write_results

D = 64
K = 10


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _in_memory(n: int, C: np.ndarray, alpha: float, repeats: int) -> tuple[float, float]:
    from aelab.clustering import MiniBatchEquilibriumKMeans
    from aelab.clustering._ekm_kernels import _row_sq_norms, _single_threaded_blas
    from aelab.clustering._ekm_kernels import _sufficient_stats as stats

    X = np.random.default_rng(0).standard_normal((n, D), dtype=np.float32)
    x_sq = _row_sq_norms(X, None)
    with _single_threaded_blas():
        full = _best(lambda: stats(X, C, alpha, x_sq=x_sq), repeats)

    def epoch() -> None:
        mb = MiniBatchEquilibriumKMeans(K, init=C.astype(np.float32), alpha=alpha, n_init=1)
        for s in range(0, n, 4096):
            mb.partial_fit(X[s : s + 4096])

    return full, _best(epoch, repeats)


def _worker_peak_mb(client) -> float:
    def rss() -> float:
        import psutil

        return psutil.Process().memory_info().rss / 2**20

    return max(client.run(rss).values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000, 10_000_000]
    )
    ap.add_argument("--chunk", type=int, default=131_072, help="rows per Dask chunk (32 MiB)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-memory-gb", type=float, default=1.0)
    add_arguments(ap, "ekm_scale")
    args = ap.parse_args()
    if args.smoke:  # seconds: one small size, one worker
        args.sizes, args.chunk, args.workers, args.repeats = [8192], 4096, 1, 1

    import dask.array as da
    from distributed import Client, LocalCluster

    from aelab.clustering._ekm_dask import make_evaluate

    C = np.random.default_rng(1).standard_normal((K, D))
    alpha = 2.0 / (2 * D)  # the auto rule for unit-variance data
    rows = []
    with (
        LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        for n in args.sizes:
            fits = n * D * 4 / 2**30 <= args.max_memory_gb
            full, mini = _in_memory(n, C, alpha, args.repeats) if fits else (np.nan, np.nan)
            X = da.random.default_rng(0).standard_normal(
                (n, D), chunks=(min(args.chunk, n), D), dtype=np.float32
            )
            evaluate = make_evaluate(X, None, alpha, None)
            gen = _best(lambda X=X: X.sum().compute(), args.repeats)
            client.run(lambda: None)
            dask_t = _best(lambda evaluate=evaluate: evaluate(C), args.repeats)
            peak = _worker_peak_mb(client)
            rows.append((n, full, mini, dask_t, max(dask_t - gen, 0.0), peak, len(X.chunks[0])))
            print(f"done N={n}", flush=True)
    chunk_mb = args.chunk * D * 4 / 2**20
    print(f"EKM one pass over N rows, D={D}, k={K}, float32; dask: {args.workers} worker "
          f"processes, chunks of {args.chunk} rows ({chunk_mb:.0f} MiB)")  # fmt: skip
    print(f"{'N':>10} {'in-memory s':>12} {'mini-batch s':>13} {'dask s':>8} {'dask net s':>11} "
          f"{'us/row (mem)':>13} {'us/row (dask)':>14} {'chunks':>7} {'worker RSS MB':>14}")  # fmt: skip
    for n, full, mini, dt, net, peak, chunks in rows:
        print(f"{n:>10} {full:>12.4f} {mini:>13.4f} {dt:>8.3f} {net:>11.3f} "
              f"{1e6 * full / n:>13.3f} {1e6 * dt / n:>14.3f} {chunks:>7} {peak:>14.0f}")  # fmt: skip
    print("(nan: the array would exceed --max-memory-gb, so only Dask ran; "
          "dask net = dask minus a generation-only pass)")  # fmt: skip
    columns = ["N", "in memory", "mini-batch epoch", "Dask", "Dask worker peak RSS"]
    cells = [[f"{n:.0e}".replace("e+0", "e"), _s(full), _s(mini), _s(dt), f"{peak:.0f} MB"]
             for n, full, mini, dt, _net, peak, _chunks in rows]  # fmt: skip
    write_results(args.out, "ekm_scale", mode_of(args), tables={"pass": table(columns, cells)},
                  data={"rows": [dict(zip(("n", "in_memory_s", "minibatch_s", "dask_s", "dask_net_s",
                                           "worker_peak_mb", "chunks"), r, strict=True))
                                 for r in rows], "chunk": args.chunk, "workers": args.workers})  # fmt: skip


def _s(seconds: float) -> str:
    """Seconds as the README's table writes them (``-`` where a variant did not run)."""
    if not np.isfinite(seconds):
        return "-"
    return f"{seconds:.3f} s" if seconds < 0.1 else f"{seconds:.2f} s"


if __name__ == "__main__":
    main()
