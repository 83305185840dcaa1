"""Deep clustering: alternate between clustering the latents and fine-tuning the encoder.

Each round (in the spirit of DEC/IDEC, Xie et al. 2016 and Guo et al. 2017,
and of DeepCluster, Caron et al. 2018):

1. encode every image and cluster the latents (in a fixed clustering space,
   see :mod:`aelab.clustering.space`) with Equilibrium K-Means or K-means,
   warm-started from the previous round's centroids;
2. fine-tune the autoencoder for a few epochs with the centroids fixed, on
   ``reconstruction + gamma * clustering``.

The clustering term, per latent ``z`` (in the clustering space, with
``d_k = ||z - c_k||^2`` divided by the mean squared distance ``s`` of the
round's latents to their mean, so that ``gamma`` does not depend on the
latent scale):

- ``method="ekm"``: the EKM objective ``J = sum_k U_k d_k`` with
  ``U = softmax(-alpha s d)``. Its gradient is ``sum_k w_k grad d_k`` with the
  equilibrium weights ``w_k = U_k (1 - alpha s (d_k - J))`` (the paper's
  Eq. 38): each latent is pulled towards its centroids by the EKM weights,
  and pushed away from the others where a weight is negative, which is the
  repulsion that keeps small clusters apart (Yudong He, arXiv 2402.14490).
- ``method="kmeans"``: ``min_k d_k``, the pull towards the nearest centroid
  (the hard assignment).

Both weights are computed from the current latents of the batch, so the
step is the exact gradient of the objective the clustering minimises.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from aelab.runtime import resolve_device, seed_everything
from aelab.clustering.space import SPACES, FeatureSpace, fit_feature_space
from aelab.data.dataset import ImageDataset
from aelab.training.loop import TrainConfig, Trainer
from aelab.training.recipes import _batch_factory, _check_dataset, encode
from aelab.training.steps import RECON_LOSSES, Augment, _recon_loss, unpack_batch

__all__ = [
    "METHODS",
    "DeepClusterResult",
    "cluster_latents",
    "clustering_loss",
    "deep_cluster",
    "deep_clustering_step",
]

METHODS: tuple[str, ...] = ("ekm", "kmeans")


def clustering_loss(
    z: torch.Tensor,
    centroids: torch.Tensor,
    *,
    method: str,
    alpha: float,
    scale: float = 1.0,
) -> torch.Tensor:
    """Mean clustering loss of a batch of latents against fixed centroids.

    Parameters
    ----------
    z : torch.Tensor of shape (B, D)
        Latents in the clustering space.
    centroids : torch.Tensor of shape (K, D)
    method : {"ekm", "kmeans"}
        ``"ekm"``: the EKM objective ``sum_k softmax(-alpha d)_k d_k``, whose
        gradient weights the pull to each centroid by the equilibrium weights;
        ``"kmeans"``: ``min_k d_k``.
    alpha : float
        EKM inverse temperature, in units of the raw squared distances
        (ignored by ``"kmeans"``).
    scale : float
        Squared distances are divided by this (the loss is then dimensionless).

    Returns
    -------
    torch.Tensor
        A scalar (float32).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if z.ndim != 2 or centroids.ndim != 2 or z.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"z (B, D) and centroids (K, D) must share D, got {tuple(z.shape)} and {tuple(centroids.shape)}"
        )
    if not scale > 0 or not alpha > 0:
        raise ValueError(f"scale and alpha must be > 0, got scale={scale}, alpha={alpha}")
    return _clustering_loss(z, centroids, method, float(alpha), float(scale))


def _clustering_loss(
    z: torch.Tensor, c: torch.Tensor, method: str, alpha: float, scale: float
) -> torch.Tensor:
    with torch.autocast(z.device.type, enabled=False):
        z, c = z.float(), c.float()
        # (B, D), (K, D) -> (B, K); direct differences are exact and K is small.
        d = (z[:, None, :] - c[None, :, :]).square().sum(-1) / scale
        if method == "kmeans":
            return d.min(dim=1).values.mean()
        # softmax shifts by the row maximum: no underflow at any alpha (EKM trap 1).
        u = torch.softmax(-(alpha * scale) * d, dim=1)
        return (u * d).sum(1).mean()


def deep_clustering_step(
    space: FeatureSpace,
    centroids: np.ndarray,
    *,
    method: str,
    alpha: float,
    scale: float,
    gamma: float,
    loss: str = "mse",
    augment: Augment | None = None,
) -> Callable[[nn.Module, Any, str], dict[str, Any]]:
    """A step for :class:`~aelab.training.Trainer`: reconstruction + gamma * clustering loss.

    Parameters
    ----------
    space : FeatureSpace
        Map from latents to the clustering space (differentiable).
    centroids : ndarray of shape (n_clusters, n_space_features)
        Fixed for the step's lifetime (one round).
    method : {"ekm", "kmeans"}
    alpha : float
        EKM alpha in the clustering space's units.
    scale : float
        Squared distances are divided by it (see :func:`clustering_loss`).
    gamma : float
        Weight of the clustering term; 0 is plain reconstruction.
    loss : {"mse", "l1", "bce"}
        Reconstruction loss.
    augment : callable, optional
        Training-stage batch augmentation.

    Returns
    -------
    callable
        ``step(model, batch, stage)`` returning ``loss``, ``recon``, ``cluster`` and ``n``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if loss not in RECON_LOSSES:
        raise ValueError(
            f"unknown reconstruction loss {loss!r}; use one of {', '.join(RECON_LOSSES)}"
        )
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    c_np = np.asarray(centroids, dtype=np.float32)
    cache: dict[torch.device, torch.Tensor] = {}

    def step(model: nn.Module, batch: Any, stage: str) -> dict[str, Any]:
        x, _, _ = unpack_batch(batch)
        if stage == "train" and augment is not None:
            x = augment(x).clamp(0, 1)
        z = model.encode(x)
        rec = _recon_loss(model.decode(z), x, loss)
        if z.device not in cache:
            cache[z.device] = torch.from_numpy(c_np).to(z.device)
        clu = _clustering_loss(
            space.transform_torch(z.float()), cache[z.device], method, alpha, scale
        )
        return {
            "loss": rec + gamma * clu,
            "recon": rec.detach(),
            "cluster": clu.detach(),
            "n": x.shape[0],
        }

    return step


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
    import warnings

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


def _parse_alpha(alpha: float | str) -> tuple[str, float]:
    """``"auto"`` -> ("x", 1); ``"3x"`` -> ("x", 3); a number -> ("abs", value)."""
    if isinstance(alpha, str):
        text = alpha.strip().lower()
        if text == "auto":
            return "x", 1.0
        try:
            v = float(text[:-1]) if text.endswith("x") else float(text)
        except ValueError:
            v = float("nan")
        kind = "x" if text.endswith("x") else "abs"
    else:
        kind, v = "abs", float(alpha)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(
            f"alpha must be 'auto', a multiple of it like '3x', or a positive number; got {alpha!r}"
        )
    return kind, v


def _alpha_value(rule: tuple[str, float], scale: float) -> float:
    kind, v = rule
    return v * 2.0 / scale if kind == "x" else v


def _spread(Z: np.ndarray) -> float:
    """Mean squared distance to the mean (1 for a degenerate set)."""
    s = float(np.mean(np.sum((Z - Z.mean(0)) ** 2, axis=1)))
    return s if s > 0 else 1.0


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
    config : dict
        The settings used.
    """

    labels: np.ndarray
    centroids: np.ndarray
    space: FeatureSpace
    initial_labels: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    initial: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def _summary(labels: np.ndarray, k: int, y: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": np.bincount(labels, minlength=k).tolist()}
    if y is not None:
        from aelab.clustering.metrics import clustering_scores

        out.update(clustering_scores(y, labels))
    return out


@torch.no_grad()
def _evaluate(
    model: nn.Module,
    step: Callable[..., dict[str, Any]],
    data: ImageDataset,
    batch_size: int,
    device: torch.device,
) -> dict[str, float]:
    """The step's metrics on all of ``data`` in eval mode (no augmentation)."""
    was = model.training
    model.to(device).eval()
    sums: dict[str, float] = {}
    n = 0
    try:
        for i in range(0, len(data), batch_size):
            x = data.images[i : i + batch_size].to(device).float().div_(255)
            out = step(model, x, "val")
            b = int(out["n"])
            n += b
            for k, v in out.items():
                if k != "n":
                    sums[k] = sums.get(k, 0.0) + float(v) * b
    finally:
        model.train(was)
    return {k: v / n for k, v in sums.items()}


def deep_cluster(
    model: nn.Module,
    data: ImageDataset,
    *,
    k: int,
    method: str = "ekm",
    rounds: int = 10,
    epochs_per_round: int = 1,
    gamma: float = 1.0,
    alpha: float | str = "auto",
    space: str = "l2",
    n_components: int = 32,
    lr: float = 1e-4,
    batch_size: int = 128,
    loss: str = "mse",
    augment: Augment | None = None,
    n_init: int = 10,
    labels: np.ndarray | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
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
    k : int
        Number of clusters.
    method : {"ekm", "kmeans"}
        Clustering algorithm and matching clustering loss (see the module docstring).
    rounds : int
        Clustering / fine-tuning alternations.
    epochs_per_round : int
        Fine-tuning epochs per round (centroids fixed meanwhile).
    gamma : float
        Weight of the clustering loss against the reconstruction loss.
    alpha : float or str
        EKM alpha in the clustering space: a number, or ``"auto"`` / a
        multiple of it such as ``"3x"``, where auto re-derives
        ``2 / mean squared distance to the mean`` every round.
    space : {"raw", "l2", "pca", "l2-pca"}
        Clustering space, fitted on the initial latents and then fixed.
        Default ``"l2"``: directions of the latent, not its magnitude
        (see :mod:`aelab.clustering.space`).
    n_components : int
        Dimensions of the PCA spaces.
    lr : float
        AdamW learning rate (constant within a round).
    batch_size : int
    loss : {"mse", "l1", "bce"}
        Reconstruction loss.
    augment : callable, optional
        Training-stage batch augmentation.
    n_init : int
        Starts of the first clustering (later rounds warm-start from the last centroids).
    labels : array-like of shape (n_samples,), optional
        True classes for scoring; default ``data.labels``.
    seed : int
    device : str
        ``"auto"`` uses CUDA when present.
    progress : bool
        Progress bars of the training loop.
    log : callable, optional
        Receives one line per round.

    Returns
    -------
    DeepClusterResult
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; choose one of {', '.join(SPACES)}")
    _check_dataset(model, data, "data")
    n = len(data)
    if not isinstance(k, int | np.integer) or not 1 <= k <= n:
        raise ValueError(f"k={k!r} must be an integer from 1 to the number of images ({n})")
    for name, v in (("rounds", rounds), ("epochs_per_round", epochs_per_round), ("n_init", n_init)):
        if int(v) < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    alpha_rule = _parse_alpha(alpha)
    if n < 2:
        raise ValueError("deep clustering needs at least 2 images (batch norm)")
    y = None
    if labels is not None:
        y = np.asarray(labels).astype(np.int64)
    elif data.labels is not None:
        y = data.labels.numpy().astype(np.int64)
    if y is not None and y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {y.shape}")
    say = log or (lambda _msg: None)
    dev = resolve_device(device)
    seed_everything(seed)
    config = {
        "k": int(k), "method": method, "rounds": int(rounds), "epochs_per_round": int(epochs_per_round),
        "gamma": float(gamma), "alpha": alpha, "space": space, "n_components": int(n_components),
        "lr": float(lr), "batch_size": int(batch_size), "loss": loss, "augment": augment is not None,
        "n_init": int(n_init), "seed": int(seed),
    }  # fmt: skip

    Z = encode(model, data, batch_size=max(256, batch_size), device=dev)
    fs = fit_feature_space(Z, space, n_components=n_components, random_state=seed)
    Zc = fs.transform(Z).astype(np.float64)
    init_labels, C, _ = cluster_latents(
        Zc, k, method=method, alpha=_alpha_value(alpha_rule, _spread(Zc)), n_init=n_init, seed=seed
    )
    initial = _summary(init_labels, k, y)
    say(f"[deepcluster] initial {method}: sizes {initial['sizes']}" + _fmt_scores(initial))
    batches = _batch_factory(
        data, batch_size=batch_size, shuffle=True, seed=seed, device=dev, labels=False
    )
    history: list[dict[str, Any]] = []
    cur_labels = init_labels
    for r in range(int(rounds)):
        t0 = time.perf_counter()
        if r > 0:
            Z = encode(model, data, batch_size=max(256, batch_size), device=dev)
            Zc = fs.transform(Z).astype(np.float64)
            cur_labels, C, _ = cluster_latents(
                Zc, k, method=method, alpha=_alpha_value(alpha_rule, _spread(Zc)), init=C,
                seed=seed + r,
            )  # fmt: skip
        scale = _spread(Zc)
        a = _alpha_value(alpha_rule, scale)
        step = deep_clustering_step(
            fs, C, method=method, alpha=a, scale=scale, gamma=gamma, loss=loss, augment=augment
        )
        before = _evaluate(model, step, data, max(256, batch_size), dev)
        cfg = TrainConfig(
            epochs=int(epochs_per_round), lr=lr, warmup_epochs=0.0, min_lr_ratio=1.0,
            restore_best=False, seed=seed + 1000 * (r + 1), device=str(dev), progress=progress,
        )  # fmt: skip
        # One round's batches differ from the next's: offset the epoch by the round.
        trainer = Trainer(
            model, step, lambda e, r=r: batches(r * int(epochs_per_round) + e), config=cfg
        )
        fit = trainer.fit()
        after = _evaluate(model, step, data, max(256, batch_size), dev)
        row: dict[str, Any] = {
            "round": r + 1, "alpha": a if method == "ekm" else None, "scale": scale,
            **_summary(cur_labels, k, y),
            "loss_before": before["loss"], "loss_after": after["loss"],
            "recon_before": before["recon"], "recon_after": after["recon"],
            "cluster_before": before["cluster"], "cluster_after": after["cluster"],
            "train_loss": fit.history[-1]["train_loss"],
            "time_s": round(time.perf_counter() - t0, 3),
        }  # fmt: skip
        history.append(row)
        say(
            f"[deepcluster] round {r + 1}/{rounds}: sizes {row['sizes']}{_fmt_scores(row)}; "
            f"loss {row['loss_before']:.4g} -> {row['loss_after']:.4g} "
            f"(recon {row['recon_after']:.4g}, cluster {row['cluster_after']:.4g}), {row['time_s']:.1f} s"
        )
    Z = encode(model, data, batch_size=max(256, batch_size), device=dev)
    Zc = fs.transform(Z).astype(np.float64)
    final_labels, C, _ = cluster_latents(
        Zc,
        k,
        method=method,
        alpha=_alpha_value(alpha_rule, _spread(Zc)),
        init=C,
        seed=seed + rounds,
    )
    final = _summary(final_labels, k, y)
    say(f"[deepcluster] final: sizes {final['sizes']}" + _fmt_scores(final))
    return DeepClusterResult(
        labels=final_labels, centroids=C, space=fs, initial_labels=init_labels, history=history,
        final=final, initial=initial, config=config,
    )  # fmt: skip


def _fmt_scores(row: dict[str, Any]) -> str:
    if "acc" not in row:
        return ""
    return f", acc {row['acc']:.4f} nmi {row['nmi']:.4f} ari {row['ari']:.4f}"


def result_to_dict(res: DeepClusterResult) -> dict[str, Any]:
    """JSON-able summary of a :class:`DeepClusterResult` (without the arrays)."""
    d = dataclasses.asdict(res)
    for key in ("labels", "centroids", "initial_labels", "space"):
        d.pop(key)
    d["space"] = res.space.to_dict()
    return d
