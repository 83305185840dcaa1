"""One start of Equilibrium K-Means: the damped / fixed-point iteration to convergence.

Private: the estimators validate and call :func:`_run_ekm`. numpy only; the
passes over the data come from ``_ekm_kernels`` (or, for a Dask array, from
the ``evaluate`` and ``farthest`` callables of ``_ekm_dask``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

from aelab.clustering._ekm_data import _DataStats
from aelab.clustering._ekm_kernels import ChunkStats, _farthest, _sufficient_stats

#: A centroid whose total equilibrium weight is at most this fraction of the
#: total sample weight is "dead": its update S / W would divide by ~0.
_DEAD_FRACTION = 1e-6
#: Anderson acceleration keeps this many past iterates.
_ANDERSON_MEMORY = 5
#: Step of the damped update: c <- c + 0.5 (c_fixed - c).
_DAMPING = 0.5


class _RunResult:
    __slots__ = ("centers", "stats", "n_iter", "converged", "cycled", "last_shift")

    def __init__(
        self,
        centers: np.ndarray,
        stats: ChunkStats,
        n_iter: int,
        converged: bool,
        cycled: bool,
        last_shift: float,
    ) -> None:
        self.centers = centers
        self.stats = stats
        self.n_iter = n_iter
        self.converged = converged
        self.cycled = cycled
        self.last_shift = last_shift


def _fixed_point(
    stats: ChunkStats, C: np.ndarray, shift: np.ndarray | None, alive: np.ndarray
) -> np.ndarray:
    """``sum_n w_kn x_n / sum_n w_kn`` for live centroids; dead ones stay where they are."""
    T = C.copy()
    T[alive] = stats.weighted_sum[alive] / stats.weight_total[alive, None]
    if shift is not None:
        T[alive] += shift
    return T


def _relocate_dead(
    X: np.ndarray,
    C: np.ndarray,
    stats: ChunkStats,
    data: _DataStats,
    owner: str,
    farthest: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, bool]:
    """Move centroids with vanishing total weight to the farthest samples; warn naming them."""
    dead = np.flatnonzero(stats.weight_total <= _DEAD_FRACTION * data.total_weight)
    if dead.size == 0:
        return C, False
    if farthest is None:
        far = _farthest(X, C, dead.size, shift=data.shift)
    else:
        far = farthest(C, dead.size)
    C = C.copy()
    moves = []
    for k, idx in zip(dead, far, strict=False):
        C[k] = np.asarray(X[idx])
        moves.append(f"centroid {k} (total weight {stats.weight_total[k]:.3g}) -> sample {idx}")
    warnings.warn(
        f"{owner}: {dead.size} centroid(s) had a vanishing total weight and were relocated to the "
        f"farthest sample(s): {'; '.join(moves)}",
        RuntimeWarning,
        stacklevel=4,
    )
    return C, True


def _anderson(
    hist_g: list[np.ndarray], hist_f: list[np.ndarray], G: np.ndarray, step: np.ndarray
) -> np.ndarray | None:
    """Record the damped step ``G = C + step`` and extrapolate from the history (Anderson type II).

    Keeps the last ``_ANDERSON_MEMORY + 1`` steps in ``hist_g`` and ``hist_f``
    (in place). Returns the extrapolated centroids (possibly not finite), or
    None while fewer than two steps are recorded.
    """
    hist_g.append(G.ravel())
    hist_f.append(step.ravel())
    if len(hist_f) > _ANDERSON_MEMORY + 1:
        del hist_g[0], hist_f[0]
    if len(hist_f) < 2:
        return None
    dF = np.diff(np.stack(hist_f), axis=0).T  # (K*D, m)
    dG = np.diff(np.stack(hist_g), axis=0).T
    gamma = np.linalg.lstsq(dF, hist_f[-1], rcond=None)[0]
    return (G.ravel() - dG @ gamma).reshape(G.shape)


def _run_ekm(
    X: np.ndarray,
    C0: np.ndarray,
    alpha: float,
    data: _DataStats,
    sample_weight: np.ndarray | None,
    *,
    update: str,
    acceleration: str | None,
    max_iter: int,
    tol: float,
    verbose: int,
    owner: str,
    evaluate: Callable[[np.ndarray], ChunkStats] | None = None,
    farthest: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> _RunResult:
    """Iterate one start to convergence, a period-2 cycle, or ``max_iter`` passes.

    Each pass over X evaluates the sufficient statistics (and J) at one set of
    centroids; ``n_iter`` counts passes, including rejected extrapolations.
    The returned centroids are always ones at which ``stats`` was evaluated.

    ``update="damped"`` takes half a step towards the fixed point; with
    ``acceleration="anderson"`` it extrapolates from the last few damped steps
    (Anderson type II) and keeps an extrapolation only if J does not rise;
    otherwise it falls back to the plain damped step. ``update="fixed-point"``
    is the paper's rule; when two iterates two steps apart agree (a period-2
    cycle) it stops and keeps the lower-J state of the pair.

    ``evaluate(C)`` and ``farthest(C, n)`` replace the in-memory pass and the
    search for relocation targets (the Dask path passes its own).
    """

    if evaluate is None:

        def evaluate(C: np.ndarray) -> ChunkStats:
            return _sufficient_stats(
                X, C, alpha, x_sq=data.x_sq, sample_weight=sample_weight, shift=data.shift
            )

    eps = float(np.finfo(X.dtype).eps)
    C = np.asarray(C0, dtype=np.float64).copy()
    st = evaluate(C)
    n_iter = 1
    relocations = 0
    hist_g: list[np.ndarray] = []
    hist_f: list[np.ndarray] = []
    prev: tuple[np.ndarray, ChunkStats] | None = None
    shift2 = np.inf
    while True:
        alive = st.weight_total > _DEAD_FRACTION * data.total_weight
        if not alive.all() and relocations < 10 * C.shape[0] and n_iter < max_iter:
            C, moved = _relocate_dead(X, C, st, data, owner, farthest)
            relocations += int(moved)
            hist_g.clear()
            hist_f.clear()
            prev = None
            st = evaluate(C)
            n_iter += 1
            continue
        T = _fixed_point(st, C, data.shift, alive)
        step = T - C
        if update == "damped":
            step *= _DAMPING
        shift2 = float(np.sum(step * step))
        if verbose:
            print(
                f"[{owner}] pass {n_iter}: objective {st.objective:.10g}, centroid shift^2 {shift2:.3e}"
            )
        if shift2 <= tol:
            return _RunResult(C, st, n_iter, True, False, shift2)
        if n_iter >= max_iter:
            return _RunResult(C, st, n_iter, False, False, shift2)
        G = C + step
        if update == "fixed-point":
            if prev is not None and float(np.sum((G - prev[0]) ** 2)) <= tol:
                # Period 2: C_{t+1} == C_{t-1}; the map will alternate forever.
                if verbose:
                    print(f"[{owner}] period-2 cycle detected at pass {n_iter}")
                best = (C, st) if st.objective <= prev[1].objective else prev
                return _RunResult(best[0], best[1], n_iter, False, True, shift2)
            prev = (C, st)
            C, st = G, evaluate(G)
            n_iter += 1
            continue
        if acceleration == "anderson":
            cand = _anderson(hist_g, hist_f, G, step)
            if cand is not None:
                if np.isfinite(cand).all():
                    st_c = evaluate(cand)
                    n_iter += 1
                    if st_c.objective <= st.objective + 4 * eps * abs(st.objective):
                        C, st = cand, st_c
                        continue
                # The extrapolation raised J: restart the history from the plain step.
                del hist_g[:-1], hist_f[:-1]
                if n_iter >= max_iter:
                    return _RunResult(C, st, n_iter, False, False, shift2)
        C, st = G, evaluate(G)
        n_iter += 1
