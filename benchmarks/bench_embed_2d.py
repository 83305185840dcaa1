"""Time aelab.viz.embed_2d (openTSNE) against scikit-learn's TSNE on the digits set.

Prints one row per size: seconds for each, their ratio (above 1: aelab faster), and the trustworthiness
(k=10) of both maps, so speed is never bought with a worse map unnoticed.

    PYTHONPATH=src python benchmarks/bench_embed_2d.py [--sizes 500 1797] [--n-iter 750] [--repeats 3]
    PYTHONPATH=src python benchmarks/bench_embed_2d.py --smoke --out /tmp/smoke.json   # seconds
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.datasets import load_digits
from sklearn.manifold import TSNE, trustworthiness

from _results import add_arguments, mode_of, table, write_results
from aelab.viz import embed_2d


def _best_of(repeats: int, fn: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    """Fastest wall time of ``repeats`` calls (the machine may be shared) and the last result."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 1797])
    parser.add_argument("--n-iter", type=int, default=750, help="total t-SNE iterations for both")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    add_arguments(parser, "bench_embed_2d")
    args = parser.parse_args()
    if args.smoke:  # seconds: a small map, few iterations
        args.sizes, args.n_iter, args.repeats = [200], 250, 1
    x_all, _ = load_digits(return_X_y=True)
    x_all = x_all.astype(np.float64)
    print(
        f"{'n':>6} {'aelab s':>8} {'sklearn s':>9} {'sklearn/aelab':>13} {'trust aelab':>11} {'trust sklearn':>13}"
    )
    rows = []
    for n in args.sizes:
        x = x_all[:n]
        t0 = time.perf_counter()
        ours, _ = embed_2d(x, random_state=0, n_iter=args.n_iter, n_jobs=1)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = TSNE(
            perplexity=min(30.0, (n - 1) / 3),
            max_iter=args.n_iter,
            random_state=0,
            init="pca",
            n_jobs=1,
        ).fit_transform(x)
        t_ref = time.perf_counter() - t0
        tw_ours = trustworthiness(x, ours, n_neighbors=10)
        tw_ref = trustworthiness(x, ref, n_neighbors=10)
        print(
            f"{n:>6} {t_ours:>8.2f} {t_ref:>9.2f} {t_ref / t_ours:>13.2f} {tw_ours:>11.3f} {tw_ref:>13.3f}"
        )
        rows.append([str(n), f"{t_ours:.2f}", f"{t_ref:.2f}", f"{t_ref / t_ours:.2f}",
                     f"{tw_ours:.3f}", f"{tw_ref:.3f}"])  # fmt: skip
    columns = ["n", "aelab s", "sklearn s", "sklearn/aelab", "trust aelab", "trust sklearn"]
    write_results(args.out, "bench_embed_2d", mode_of(args), tables={"tsne": table(columns, rows)},
                  data={"n_iter": args.n_iter, "repeats": args.repeats})  # fmt: skip


if __name__ == "__main__":
    main()
