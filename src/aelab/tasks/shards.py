"""Clustering a folder of latent shards with Dask, optionally on a ``dask.distributed`` cluster.

The shards (``aelab embed --out FOLDER``) are never loaded whole: they become
a ``dask.array`` that :class:`~aelab.clustering.EquilibriumKMeans` fits
chunk by chunk. The Dask client, when one is asked for, lives only for the fit.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aelab.clustering import AlphaMultiple, parse_alpha
from aelab.tasks.cluster import ClusterOptions, ClusterResult, _result, _Warnings

__all__ = ["cluster_shards"]


@contextlib.contextmanager
def _client(scheduler: str | None) -> Iterator[Any]:
    """A ``dask.distributed`` client for ``scheduler`` (``"local"``: local worker processes)."""
    if scheduler is None:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            "--scheduler needs the dask.distributed package: pip install 'aelab[dask]' "
            "(or pip install distributed)"
        ) from None
    cluster = LocalCluster(processes=True) if scheduler == "local" else None
    try:
        client = Client(cluster) if cluster is not None else Client(scheduler, timeout="30s")
    except OSError as e:
        raise ValueError(
            f"cannot reach the Dask scheduler at {scheduler!r} ({e}); start one with "
            "`dask scheduler` and workers with `dask worker ADDRESS`, or use --scheduler local"
        ) from None
    try:
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def cluster_shards(
    directory: Path, opts: ClusterOptions, scheduler: str | None
) -> tuple[Any, np.ndarray, ClusterResult]:
    """Fit EKM on the shards in ``directory``; return the estimator, the labels and the result.

    Labels stored beside the shards (one integer a row) score the clustering.
    """
    from aelab.data.shards import read_shards, shard_column

    X = read_shards(directory)
    y = shard_column(directory, "labels")
    if opts.k > X.shape[0]:
        raise ValueError(
            f"k={opts.k} is larger than the number of samples ({X.shape[0]}); lower --k"
        )
    alpha = parse_alpha(opts.alpha)
    if isinstance(alpha, AlphaMultiple):
        raise ValueError(f"--alpha {alpha}: a folder of shards takes 'auto' or a number")
    caught = _Warnings()
    with _client(scheduler):
        est = caught(opts.estimator(alpha).fit, X)
        labels = np.asarray(est.labels_.compute())
    res = _result(
        est, labels, opts, str(directory), X.shape, y, caught, "raw", [], [], str(opts.alpha)
    )
    return est, labels, dataclasses.replace(res, scheduler=scheduler, chunks=len(X.chunks[0]))
