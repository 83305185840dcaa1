"""Deep clustering: alternate between clustering the latents and fine-tuning the encoder.

Each round (in the spirit of DEC/IDEC, Xie et al. 2016 and Guo et al. 2017,
and of DeepCluster, Caron et al. 2018):

1. encode every image and cluster the latents (in a fixed clustering space,
   see :mod:`aelab.clustering.space`) with Equilibrium K-Means or K-means,
   warm-started from the previous round's centroids;
2. fine-tune the autoencoder for a few epochs with the centroids fixed, on
   ``reconstruction + gamma * clustering`` (see :mod:`aelab.deepcluster.loss`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from aelab.clustering import parse_alpha, resolve_alpha
from aelab.clustering.space import SPACES, FeatureSpace, fit_feature_space
from aelab.data.dataset import ImageDataset
from aelab.deepcluster.loss import METHODS, deep_clustering_step
from aelab.runtime import resolve_device, seed_everything
from aelab.training import TrainConfig, Trainer, batch_factory, check_dataset, encode
from aelab.training.steps import Augment

__all__ = ["DeepClusterConfig", "DeepClusterResult", "cluster_latents", "deep_cluster"]


@dataclass
class DeepClusterConfig:
    """Settings of :func:`deep_cluster`.

    Parameters
    ----------
    k : int
        Number of clusters.
    method : {"ekm", "kmeans"}
        Clustering algorithm and matching clustering loss.
    rounds : int
        Clustering / fine-tuning alternations.
    epochs_per_round : int
        Fine-tuning epochs per round (centroids fixed meanwhile).
    gamma : float
        Weight of the clustering loss against the reconstruction loss.
    alpha : str
        EKM alpha in the clustering space: ``"auto"`` (``2 / mean squared
        distance to the mean``, re-derived every round), a multiple of it such
        as ``"3x"``, or a number.
    space : {"raw", "l2", "pca", "l2-pca"}
        Clustering space, fitted on the initial latents and then fixed.
        ``"l2"``: directions of the latent, not its magnitude.
    n_components : int
        Dimensions of the PCA spaces.
    lr : float
        AdamW learning rate (constant within a round).
    batch_size : int
    loss : {"mse", "l1", "bce"}
        Reconstruction loss.
    n_init : int
        Starts of the first clustering (later rounds warm-start from the last centroids).
    seed : int
    device : str
        ``"auto"`` uses CUDA when present.
    progress : bool
        Progress bars of the training loop.
    """

    k: int
    method: str = "ekm"
    rounds: int = 10
    epochs_per_round: int = 1
    gamma: float = 1.0
    alpha: str = "auto"
    space: str = "l2"
    n_components: int = 32
    lr: float = 1e-4
    batch_size: int = 128
    loss: str = "mse"
    n_init: int = 10
    seed: int = 0
    device: str = "auto"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.space not in SPACES:
            raise ValueError(f"unknown space {self.space!r}; choose one of {', '.join(SPACES)}")
        for name in ("k", "rounds", "epochs_per_round", "n_init", "n_components"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (batch norm), got {self.batch_size}")
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {self.gamma}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        parse_alpha(self.alpha)

    def alpha_for(self, Z: np.ndarray) -> float:
        """The EKM alpha for clustering-space points ``Z`` (``auto`` and ``Nx`` scale with them)."""
        return resolve_alpha(parse_alpha(self.alpha), Z)


@dataclass
class DeepClusterResult:
    """What :func:`deep_cluster` produced.

    Attributes
    ----------
    labels : ndarray of shape (n_samples,)
        Final clusters (after the last fine-tuning round).
    centroids : ndarray of shape (n_clusters, n_space_features)
        Final centroids, in the clustering space.
    space : FeatureSpace
        The clustering space (fitted on the initial latents, then fixed).
    initial_labels : ndarray of shape (n_samples,)
        Clusters of the initial (pre-trained) latents: the "AE + clustering" baseline.
    history : list of dict
        One row per round: ``round``, ``alpha``, ``sizes``, ``loss_before`` /
        ``loss_after`` (the round's objective on all images, eval mode, before
        and after its fine-tuning), ``recon_after``, ``cluster_after``, the
        training ``train_loss`` of the last epoch, ``time_s``, and ``acc``,
        ``nmi``, ``ari`` of the round's clustering when labels are known.
    final : dict
        ``sizes`` and, with labels, ``acc``, ``nmi``, ``ari`` of ``labels``.
    initial : dict
        The same for ``initial_labels``.
    config : DeepClusterConfig
        The settings used.
    """

    labels: np.ndarray
    centroids: np.ndarray
    space: FeatureSpace
    initial_labels: np.ndarray
    config: DeepClusterConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    initial: dict[str, Any] = field(default_factory=dict)


def cluster_latents(
    Z: np.ndarray,
    k: int,
    *,
    method: str,
    alpha: float | str = "auto",
    init: np.ndarray | None = None,
    n_init: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster vectors with EKM or K-means.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, n_features)
    k : int
    method : {"ekm", "kmeans"}
    alpha : float or "auto"
        EKM alpha (``"auto"``: ``2 / mean squared distance to the mean``).
    init : ndarray of shape (k, n_features), optional
        Starting centroids (one start); else ``n_init`` k-means++ starts.
    n_init : int
    seed : int

    Returns
    -------
    labels : ndarray of shape (n_samples,)
    centroids : ndarray of shape (k, n_features)
    alpha : float
        The alpha used (NaN for K-means).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "kmeans":
        from sklearn.cluster import KMeans

        km = KMeans(
            k, init="k-means++" if init is None else init, n_init=n_init if init is None else 1,
            random_state=seed,
        ).fit(Z)  # fmt: skip
        return km.labels_.astype(np.int64), km.cluster_centers_, float("nan")
    from aelab.clustering import EquilibriumKMeans

    ekm = EquilibriumKMeans(
        k, alpha=alpha, init="k-means++" if init is None else init.astype(Z.dtype),
        n_init=n_init, random_state=seed,
    )  # fmt: skip
    with warnings.catch_warnings():
        # A relocated dead centroid is reported in the round's history instead.
        warnings.simplefilter("ignore", RuntimeWarning)
        ekm.fit(Z)
    return ekm.labels_.astype(np.int64), ekm.cluster_centers_, float(ekm.alpha_)


def _summary(labels: np.ndarray, k: int, y: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": np.bincount(labels, minlength=k).tolist()}
    if y is not None:
        from aelab.clustering.metrics import clustering_scores

        out.update(clustering_scores(y, labels))
    return out


@torch.no_grad()
def _evaluate(
    model: nn.Module, step: Callable[..., dict[str, Any]], data: ImageDataset, batch_size: int,
    device: torch.device,
) -> dict[str, float]:  # fmt: skip
    """The step's metrics on all of ``data`` in eval mode (no augmentation)."""
    from aelab.training import map_batches

    rows: list[dict[str, float]] = []

    def metrics(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = step(m, x, "val")
        rows.append({k: float(v) * int(out["n"]) for k, v in out.items() if k != "n"})
        return x.new_zeros(len(x))

    map_batches(model, data, metrics, batch_size=batch_size, device=device)
    return {k: sum(r[k] for r in rows) / len(data) for k in rows[0]}


class _Rounds:
    """The state one deep-clustering run carries from round to round (trusts its input)."""

    def __init__(
        self, model: nn.Module, data: ImageDataset, cfg: DeepClusterConfig,
        augment: Augment | None, y: np.ndarray | None, say: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.model, self.data, self.cfg, self.augment, self.y, self.say = (
            model, data, cfg, augment, y, say
        )  # fmt: skip
        self.dev = resolve_device(cfg.device)
        self.eval_batch = max(256, cfg.batch_size)
        self.batches = batch_factory(
            data, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, device=self.dev,
            labels=False,
        )  # fmt: skip
        self.space: FeatureSpace | None = None
        self.centroids: np.ndarray | None = None

    def latents(self) -> np.ndarray:
        Z = encode(self.model, self.data, batch_size=self.eval_batch, device=self.dev)
        if self.space is None:
            self.space = fit_feature_space(
                Z, self.cfg.space, n_components=self.cfg.n_components, random_state=self.cfg.seed
            )
        return self.space.transform(Z).astype(np.float64)

    def cluster(self, Zc: np.ndarray, seed: int) -> np.ndarray:
        cfg = self.cfg
        labels, self.centroids, _ = cluster_latents(
            Zc, cfg.k, method=cfg.method, alpha=cfg.alpha_for(Zc), init=self.centroids,
            n_init=cfg.n_init, seed=seed,
        )  # fmt: skip
        return labels

    def round(self, r: int, Zc: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """Fine-tune with the centroids fixed; the round's history row."""
        cfg, t0 = self.cfg, time.perf_counter()
        scale = _spread(Zc)
        a = cfg.alpha_for(Zc)
        assert self.space is not None and self.centroids is not None
        step = deep_clustering_step(
            self.space, self.centroids, method=cfg.method, alpha=a, scale=scale, gamma=cfg.gamma,
            loss=cfg.loss, augment=self.augment,
        )  # fmt: skip
        before = _evaluate(self.model, step, self.data, self.eval_batch, self.dev)
        tcfg = TrainConfig(
            epochs=cfg.epochs_per_round, lr=cfg.lr, warmup_epochs=0.0, min_lr_ratio=1.0,
            restore_best=False, seed=cfg.seed + 1000 * (r + 1), device=str(self.dev),
            progress=cfg.progress,
        )  # fmt: skip
        # One round's batches differ from the next's: offset the epoch by the round.
        epochs = cfg.epochs_per_round
        fit = Trainer(self.model, step, lambda e: self.batches(r * epochs + e), config=tcfg).fit()
        after = _evaluate(self.model, step, self.data, self.eval_batch, self.dev)
        return {
            "round": r + 1, "alpha": a if cfg.method == "ekm" else None, "scale": scale,
            **_summary(labels, cfg.k, self.y),
            "loss_before": before["loss"], "loss_after": after["loss"],
            "recon_before": before["recon"], "recon_after": after["recon"],
            "cluster_before": before["cluster"], "cluster_after": after["cluster"],
            "train_loss": fit.history[-1]["train_loss"],
            "time_s": round(time.perf_counter() - t0, 3),
        }  # fmt: skip


def _spread(Z: np.ndarray) -> float:
    """Mean squared distance to the mean (1 for a degenerate set)."""
    s = float(np.mean(np.sum((Z - Z.mean(0)) ** 2, axis=1)))
    return s if s > 0 else 1.0


def _true_labels(data: ImageDataset, labels: Any) -> np.ndarray | None:
    y = None
    if labels is not None:
        y = np.asarray(labels).astype(np.int64)
    elif data.labels is not None:
        y = data.labels.numpy().astype(np.int64)
    if y is not None and y.shape != (len(data),):
        raise ValueError(f"labels must have shape ({len(data)},), got {y.shape}")
    return y


def deep_cluster(
    model: nn.Module,
    data: ImageDataset,
    config: DeepClusterConfig,
    *,
    augment: Augment | None = None,
    labels: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> DeepClusterResult:
    """Deep clustering: alternate clustering the latents and fine-tuning the autoencoder.

    Parameters
    ----------
    model : torch.nn.Module
        An autoencoder with ``encode`` and ``decode`` (usually pre-trained);
        trained in place.
    data : ImageDataset
        Images of shape (n_samples, C, H, W) matching the model; labels, when
        present, are only used to score the rounds (never to train).
    config : DeepClusterConfig
        The settings (``k`` at least).
    augment : callable, optional
        Training-stage batch augmentation.
    labels : array-like of shape (n_samples,), optional
        True classes for scoring; default ``data.labels``.
    log : callable, optional
        Receives one line per round.

    Returns
    -------
    DeepClusterResult
    """
    if not isinstance(config, DeepClusterConfig):
        raise ValueError(f"config must be a DeepClusterConfig, got {type(config).__name__}")
    check_dataset(model, data, "data")
    if len(data) < max(2, config.k):
        raise ValueError(
            f"deep clustering into k={config.k} clusters needs at least {max(2, config.k)} "
            f"images, got {len(data)}"
        )
    y = _true_labels(data, labels)
    say = log or (lambda _msg: None)
    seed_everything(config.seed)
    run = _Rounds(model, data, config, augment, y, say)
    Zc = run.latents()
    init_labels = cur = run.cluster(Zc, config.seed)
    initial = _summary(init_labels, config.k, y)
    say(f"[deepcluster] initial {config.method}: sizes {initial['sizes']}" + _fmt_scores(initial))
    history: list[dict[str, Any]] = []
    for r in range(config.rounds):
        if r > 0:
            Zc = run.latents()
            cur = run.cluster(Zc, config.seed + r)
        row = run.round(r, Zc, cur)
        history.append(row)
        say(
            f"[deepcluster] round {r + 1}/{config.rounds}: sizes {row['sizes']}{_fmt_scores(row)}; "
            f"loss {row['loss_before']:.4g} -> {row['loss_after']:.4g} (recon "
            f"{row['recon_after']:.4g}, cluster {row['cluster_after']:.4g}), {row['time_s']:.1f} s"
        )
    final_labels = run.cluster(run.latents(), config.seed + config.rounds)
    final = _summary(final_labels, config.k, y)
    say(f"[deepcluster] final: sizes {final['sizes']}" + _fmt_scores(final))
    assert run.space is not None and run.centroids is not None
    return DeepClusterResult(
        labels=final_labels, centroids=run.centroids, space=run.space,
        initial_labels=init_labels, config=dataclasses.replace(config), history=history,
        final=final, initial=initial,
    )  # fmt: skip


def _fmt_scores(row: dict[str, Any]) -> str:
    if "acc" not in row:
        return ""
    return f", acc {row['acc']:.4f} nmi {row['nmi']:.4f} ari {row['ari']:.4f}"
