"""Two-dimensional embeddings of latent vectors for cluster maps."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from aelab.viz.images import _to_numpy

__all__ = ["MissingDependencyError", "embed_2d"]

Method = Literal["tsne", "umap", "pca"]


class MissingDependencyError(ImportError, ValueError):
    """An optional package is needed; the message names the ``pip install`` that provides it.

    It is also a ValueError so that the CLI reports it as a one-line user error.
    """


def _check_matrix(a: Any, what: str) -> np.ndarray:
    x = _to_numpy(a)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"{what} must be a 2-D array of shape (n_samples, n_features), got shape {x.shape}"
        )
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return x


def embed_2d(
    X: Any,
    *,
    method: Method = "tsne",
    random_state: int = 0,
    extra: Any = None,
    perplexity: float = 30.0,
    n_iter: int = 750,
    n_jobs: int = 1,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embed vectors in 2-D, optionally placing extra points (e.g. centroids) in the same map.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The vectors to map, e.g. latent codes.
    method : {"tsne", "umap", "pca"}, default="tsne"
        ``"tsne"`` uses openTSNE, whose embedding can place new points in an
        existing map; ``"umap"`` needs the optional umap-learn package
        (``pip install umap-learn`` or ``pip install 'aelab[umap]'``);
        ``"pca"`` is the fast linear projection of scikit-learn.
    random_state : int, default=0
        Seed; equal inputs and seed give equal embeddings.
    extra : array-like of shape (n_extra, n_features), optional
        Points to place in the map without moving it, e.g. cluster centroids.
        t-SNE puts each at the median of its nearest ``X`` points and then
        optimises it against the fixed map; UMAP and PCA use their ``transform``.
    perplexity : float, default=30.0
        t-SNE perplexity. It must stay below ``n_samples / 3`` for the
        neighbourhoods to fit, so it is lowered to ``(n_samples - 1) / 3`` for
        small inputs (and UMAP's ``n_neighbors`` to ``n_samples - 1``).
    n_iter : int, default=750
        t-SNE optimisation steps in all: the first third with early
        exaggeration, the rest without (openTSNE's defaults are 250 + 500).
        Fewer steps give rougher maps faster.
    n_jobs : int, default=1
        Threads for t-SNE / UMAP. One thread keeps results bit-for-bit
        reproducible; more may not be.

    Returns
    -------
    emb : ndarray of shape (n_samples, 2)
        The map.
    extra_emb : ndarray of shape (n_extra, 2) or None
        ``extra`` placed in the map; None when ``extra`` is None.
    """
    x = _check_matrix(X, "X")
    extra_x = None
    if extra is not None:
        extra_x = _check_matrix(extra, "extra")
        if extra_x.shape[1] != x.shape[1]:
            raise ValueError(
                f"extra has {extra_x.shape[1]} features but X has {x.shape[1]}; "
                "embed points from the same space (e.g. centroids of X)"
            )
    if method not in ("tsne", "umap", "pca"):
        raise ValueError(f"unknown method {method!r}; choose 'tsne', 'umap' or 'pca'")
    if int(n_jobs) < 1:
        raise ValueError(f"n_jobs must be >= 1, got {n_jobs}")
    n = x.shape[0]
    min_n = 2 if method == "pca" else 5
    if n < min_n:
        raise ValueError(
            f"{method} needs at least {min_n} samples, got {n}"
            + ("; use method='pca' for so few points" if method != "pca" else "")
        )
    if method == "tsne":
        if perplexity <= 0:
            raise ValueError(f"perplexity must be positive, got {perplexity}")
        if int(n_iter) < 3:
            raise ValueError(f"n_iter must be >= 3, got {n_iter}")
        return _tsne(x, extra_x, random_state, float(perplexity), int(n_iter), int(n_jobs))
    if method == "umap":
        return _umap(x, extra_x, random_state, int(n_jobs))
    return _pca(x, extra_x, random_state)


def _tsne(
    x: np.ndarray, extra: np.ndarray | None, seed: int, perplexity: float, n_iter: int, n_jobs: int
) -> tuple[np.ndarray, np.ndarray | None]:
    from openTSNE import TSNE

    n = x.shape[0]
    perplexity = min(perplexity, (n - 1) / 3)
    early = n_iter // 3
    embedding = TSNE(
        perplexity=perplexity,
        early_exaggeration_iter=early,
        n_iter=n_iter - early,
        random_state=seed,
        n_jobs=n_jobs,
        verbose=False,
    ).fit(x)
    # Copy before transform: openTSNE's transform moves the fitted embedding in place.
    emb = np.array(embedding, dtype=np.float64, copy=True)
    if extra is None:
        return emb, None
    # transform's own perplexity (5) is small by design; it too must fit in n.
    placed = embedding.transform(
        extra, perplexity=min(5.0, (n - 1) / 3), n_iter=max(1, n_iter // 3)
    )
    return emb, np.asarray(placed, dtype=np.float64)


def _umap(
    x: np.ndarray, extra: np.ndarray | None, seed: int, n_jobs: int
) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        import umap
    except ImportError:
        raise MissingDependencyError(
            "method='umap' needs the umap-learn package: pip install umap-learn "
            "(or pip install 'aelab[umap]'), or use method='tsne' or 'pca'"
        ) from None
    reducer = umap.UMAP(
        n_components=2, n_neighbors=min(15, x.shape[0] - 1), random_state=seed, n_jobs=n_jobs
    )
    emb = np.asarray(reducer.fit_transform(x), dtype=np.float64)
    placed = None if extra is None else np.asarray(reducer.transform(extra), dtype=np.float64)
    return emb, placed


def _pca(
    x: np.ndarray, extra: np.ndarray | None, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    from sklearn.decomposition import PCA

    k = min(2, x.shape[0], x.shape[1])
    pca = PCA(n_components=k, random_state=seed).fit(x)
    emb = pca.transform(x)
    placed = None if extra is None else pca.transform(extra)
    if k < 2:  # one feature (or sample): pad so callers always get (n, 2)
        emb = np.pad(emb, ((0, 0), (0, 2 - k)))
        placed = None if placed is None else np.pad(placed, ((0, 0), (0, 2 - k)))
    return emb.astype(np.float64), None if placed is None else placed.astype(np.float64)
