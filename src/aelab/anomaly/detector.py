"""Anomaly detection by reconstruction error (Part 3 of the study).

:class:`ReconstructionDetector` trains an autoencoder on normal images only;
an image it cannot reconstruct (or whose code lies far from every normal code)
scores high. The vocabulary is PyOD's: ``fit``, ``decision_function`` (higher
is more anomalous), ``predict`` (0 normal, 1 anomaly), ``contamination``,
``threshold_``, ``decision_scores_``, ``labels_``.

The threshold needs no anomalies: by default a share of the normal images is
held out of training and the threshold is set so that a target share of them
(``"fpr:0.05"``) would be flagged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.anomaly.inputs import anomaly_model_spec, as_dataset
from aelab.anomaly.scores import (
    PIXEL_SCORES,
    SCORES,
    combine_scores,
    error_maps,
    knn_distance,
    parse_score,
    pixel_scores,
    score_stats,
    transform_scores,
)
from aelab.anomaly.selfsup import (
    TRANSFORM_SETS,
    check_transforms,
    transform_logits,
    transform_reconstruction_step,
)
from aelab.anomaly.thresholds import (
    ThresholdRule,
    detection_metrics,
    parse_threshold,
    threshold_from_scores,
)
from aelab.data.dataset import ImageDataset

#: The score of ``ReconstructionDetector()``: chosen on the validation protocol of
#: ``benchmarks/anomaly_oneclass.py`` (held-out training images, never the test set).
DEFAULT_SCORE = "auto"

#: What ``score="auto"`` means: the full score from :data:`AUTO_MIN_IMAGES` normal
#: images on; below that the reconstruction error alone, because the code
#: neighbourhoods and the transformation head of a model trained on a few dozen
#: images do not carry over to new images (on the validation protocol, sklearn
#: digits with 60 images a class: 99.3 for "mse", 98.8 for "mse+latent", 94.5 for
#: the full score; Fashion-MNIST with 5,000: 93.2, 95.3 and 95.6).
AUTO_SCORES: tuple[str, str] = ("mse+latent+transform", "mse")
AUTO_MIN_IMAGES = 1000


class ReconstructionDetector:
    """Flag images an autoencoder trained on normal images cannot reconstruct or place.

    With no arguments this is the detector that ``benchmarks/anomaly_oneclass.py``
    measures (and what ``aelab anomaly fit`` and the study use): a small member
    of the ``convae`` family whose head also learns which quarter turn was
    applied to a normal image, trained for 8 epochs (at least ``min_steps``
    steps), scoring ``"mse+latent+transform"`` (``"mse"`` on fewer than 1,000
    images).

    Parameters
    ----------
    model : str, default="auto"
        A registered model name, or ``"auto"`` for the member of the ``convae``
        family that suits the images, narrowed for this task (see
        :func:`anomaly_model_spec`).
    model_overrides : dict, optional
        Config overrides for the model (e.g. ``{"latent_dim": 128}``).
    score : str, default="auto"
        Per-image score: ``"auto"`` for ``"mse+latent+transform"`` from 1,000
        normal images on and ``"mse"`` below (see :data:`AUTO_SCORES`), or one of:

        - ``"mse"``: mean squared reconstruction error (the study's measure);
        - ``"mae"``: mean absolute reconstruction error;
        - ``"ssim"``: mean of ``1 - SSIM`` over local windows;
        - ``"latent"``: mean distance of the image's code to its ``k`` nearest
          codes of the training images;
        - ``"transform"``: the model's head is also trained to tell which of
          ``transforms`` was applied to a normal image (GEOM's idea, see
          :mod:`aelab.anomaly.selfsup`); the score is its mean cross-entropy
          over every transformation of the image (``"rotation"`` is its
          former name);
        - several of them joined with ``+`` (e.g. ``"ssim+latent"``): the sum
          of each score standardised by its mean and spread on the held-out
          normal images (see :func:`aelab.anomaly.scores.combine_scores`).
    transforms : str, default="rotations"
        The transformations of the ``"transform"`` score, a key of
        :data:`aelab.anomaly.selfsup.TRANSFORM_SETS`.
    threshold : str or float, default="fpr:0.05"
        ``"fpr:R"``: flag a share R of held-out normal images;
        ``"contamination:R"``: flag a share R of the training images; a number:
        that score.
    contamination : float, optional
        PyOD's name for ``threshold="contamination:R"``; overrides ``threshold``.
    calibration_fraction : float, default=0.1
        Share of the normal images held out of training, to calibrate the
        threshold and standardise combined scores.
    epochs : int, default=8
        Passes over the training images.
    min_steps : int, default=600
        Train for more epochs when ``epochs`` would make fewer optimizer
        steps than this, so that a small set (a few hundred images) still
        trains as long as a large one.
    batch_size, lr, loss :
        Training of the autoencoder (see :class:`aelab.training.PretrainConfig`).
    k : int, default=5
        Neighbours of the ``"latent"`` score.
    transform_weight : float, default=1.0
        Weight of the transformation cross-entropy next to the reconstruction
        loss in training, when ``"transform"`` is part of the score.
    device : str, default="auto"
    random_state : int, default=0
    verbose : bool, default=True
        Progress bars while training.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained autoencoder.
    epochs_ : int
        Epochs trained (``epochs``, or more for a small set; see ``min_steps``).
    decision_scores_ : ndarray of shape (n_train,)
        Scores of the training images (the ``"latent"`` part leaves each image
        out of its own neighbours).
    calibration_scores_ : ndarray of shape (n_calibration,)
        Scores of the held-out normal images.
    threshold_ : float
        Images scoring strictly above it are anomalies.
    labels_ : ndarray of shape (n_train,)
        0/1 labels of the training images at ``threshold_``.
    score_parts_ : tuple of str
        The parts of the score (what ``"auto"`` became).
    score_stats_ : dict of str to (float, float)
        Mean and standard deviation of each score part on the held-out normals.
    latent_bank_ : ndarray of shape (n_train, latent_dim) or None
        Codes of the training images, kept when ``"latent"`` is part of the score.
    """

    def __init__(
        self,
        *,
        model: str = "auto",
        model_overrides: dict[str, Any] | None = None,
        score: str = DEFAULT_SCORE,
        transforms: str = "rotations",
        threshold: str | float = "fpr:0.05",
        contamination: float | None = None,
        calibration_fraction: float = 0.1,
        epochs: int = 8,
        min_steps: int = 600,
        batch_size: int = 64,
        lr: float = 2e-3,
        loss: str = "mse",
        k: int = 5,
        transform_weight: float = 1.0,
        device: str = "auto",
        random_state: int = 0,
        verbose: bool = True,
    ) -> None:
        self.model = model
        self.model_overrides = model_overrides
        self.score = score
        self.transforms = transforms
        self.threshold = threshold
        self.contamination = contamination
        self.calibration_fraction = calibration_fraction
        self.epochs = epochs
        self.min_steps = min_steps
        self.batch_size = batch_size
        self.lr = lr
        self.loss = loss
        self.k = k
        self.transform_weight = transform_weight
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def _params(self) -> dict[str, Any]:
        names = (
            "model", "model_overrides", "score", "transforms", "threshold", "contamination",
            "calibration_fraction", "epochs", "min_steps", "batch_size", "lr", "loss", "k",
            "transform_weight", "device", "random_state", "verbose",
        )  # fmt: skip
        return {n: getattr(self, n) for n in names}

    def check_params(self) -> ReconstructionDetector:
        """Check every parameter as :meth:`fit` does, without fitting; one-line ValueError otherwise."""
        self._validate()
        return self

    def _validate(self) -> tuple[tuple[str, ...] | None, ThresholdRule]:
        """Check every argument; the score parts (``None`` for ``"auto"``) and the threshold rule."""
        parts = None if self.score == "auto" else parse_score(self.score)
        check_transforms(self.transforms)
        if not 0.0 < self.calibration_fraction < 0.9:
            raise ValueError(
                f"calibration_fraction must be in (0, 0.9), got {self.calibration_fraction}"
            )
        for name in ("k", "epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        steps = self.min_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"min_steps must be a non-negative integer, got {steps!r}")
        if not self.transform_weight >= 0:
            raise ValueError(f"transform_weight must be >= 0, got {self.transform_weight!r}")
        return parts, parse_threshold(self.threshold, self.contamination)

    def fit(
        self,
        X: Any,
        y: None = None,
        *,
        out_dir: str | Path | None = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> ReconstructionDetector:
        """Train on normal images, then score them and set the threshold.

        Parameters
        ----------
        X : ImageDataset, data spec, or array-like of shape (n_samples, H, W[, C])
            Normal images only. Labels, if any, are ignored.
        y : None
            Ignored (present for scikit-learn-style pipelines).
        out_dir : path, optional
            Where to keep the training run (checkpoints, metrics).
        resume : bool
            Continue the interrupted training run in ``out_dir``: the detector
            ends the same as one whose training was never interrupted.
        overwrite : bool
            Replace a training run already in ``out_dir``.

        Returns
        -------
        self
        """
        from aelab.data import conform
        from aelab.models import create_model
        from aelab.runtime import seed_everything

        parts, rule = self._validate()
        data = as_dataset(X, "normal images")
        if len(data) < 10:
            raise ValueError(
                f"need at least 10 normal images to train and calibrate, got {len(data)}"
            )
        if parts is None:
            parts = parse_score(AUTO_SCORES[len(data) < AUTO_MIN_IMAGES])
        c, h, w = data.image_shape
        if self.model == "auto":
            name, overrides = anomaly_model_spec(c, h, w)
        else:
            name, overrides = self.model, {}
        # The head is used only by the transform score; otherwise it is a stub of one output.
        n_out = len(TRANSFORM_SETS[self.transforms]) if "transform" in parts else 1
        overrides = {**overrides, **(self.model_overrides or {}), "num_classes": n_out}
        seed_everything(self.random_state)
        net = create_model(name, **overrides)
        cfg = net.config
        data = conform(data, image_size=cfg.image_size, channels=cfg.in_channels)

        rng = np.random.default_rng(self.random_state)
        perm = rng.permutation(len(data))
        n_cal = max(2, int(round(self.calibration_fraction * len(data))))
        train, calib = data.subset(np.sort(perm[n_cal:])), data.subset(np.sort(perm[:n_cal]))

        result = self._train(net, name, parts, train, calib, out_dir, (resume, overwrite))
        self.model_ = net
        self.model_name_ = name
        self.history_ = result.history
        self.image_shape_ = (int(cfg.in_channels), int(cfg.image_size), int(cfg.image_size))
        self.threshold_rule_ = rule
        self.score_parts_ = parts
        self._calibrate(train, calib)
        return self

    def _calibrate(self, train: ImageDataset, calib: ImageDataset) -> None:
        """Score the training and held-out images; set the score scales and the threshold."""
        parts, rule = self.score_parts_, self.threshold_rule_
        train_parts, z_train = self._forward(train.images, parts)
        self.latent_bank_ = z_train
        if z_train is not None:
            # Leave-one-out: a training image is not its own neighbour.
            train_parts["latent"] = knn_distance(z_train, z_train, self.k, exclude_self=True)
        calib_parts = self._components(calib.images, parts)
        self.score_stats_ = score_stats(calib_parts)
        self.decision_scores_ = self._combine(train_parts)
        self.calibration_scores_ = self._combine(calib_parts)
        self.threshold_ = threshold_from_scores(
            rule, train_scores=self.decision_scores_, calib_scores=self.calibration_scores_
        )
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)

    def _train(
        self,
        net: torch.nn.Module,
        name: str,
        parts: tuple[str, ...],
        train: ImageDataset,
        calib: ImageDataset,
        out_dir: str | Path | None,
        restart: tuple[bool, bool] = (False, False),
    ) -> Any:
        from aelab.training import PretrainConfig, pretrain

        bs = min(self.batch_size, len(train))
        # Batches are full (the ragged one is dropped), so an epoch is n // bs steps.
        self.epochs_ = max(self.epochs, math.ceil(self.min_steps / max(1, len(train) // bs)))
        config = PretrainConfig(
            epochs=self.epochs_, batch_size=bs, lr=self.lr, loss=self.loss,
            seed=self.random_state, device=self.device, progress=self.verbose,
        )  # fmt: skip
        if "transform" not in parts:
            resume, overwrite = restart
            return pretrain(net, train, val=calib, config=config, out_dir=out_dir, model_name=name,
                            resume=resume, overwrite=overwrite)  # fmt: skip
        return self._train_with_transforms(net, train, calib, config, out_dir, name, restart)

    def _train_with_transforms(
        self,
        net: torch.nn.Module,
        train: ImageDataset,
        calib: ImageDataset,
        config: Any,
        out_dir: str | Path | None,
        name: str,
        restart: tuple[bool, bool] = (False, False),
    ) -> Any:
        from aelab.runtime import resolve_device
        from aelab.training import Trainer, batch_factory

        if train.image_shape[1] != train.image_shape[2]:
            raise ValueError("the transform score needs square images; use a square model")
        bs = config.batch_size
        # The recipes' batches: under torchrun each rank takes its share of every global batch.
        kw = {"batch_size": bs, "seed": self.random_state, "labels": False,
              "device": resolve_device(config.device)}  # fmt: skip
        step = transform_reconstruction_step(
            TRANSFORM_SETS[self.transforms], weight=self.transform_weight, loss=self.loss
        )
        trainer = Trainer(
            net,
            step,
            batch_factory(train, shuffle=True, **kw),
            config=config,
            val_batches=batch_factory(calib, shuffle=False, **kw),
            run_dir=out_dir,
            model_name=name,
            model_meta={"task": "anomaly-transform", "image_shape": list(train.image_shape)},
            run_config={"task": "anomaly-transform", "batch_size": bs, "loss": self.loss,
                        "transforms": self.transforms, "transform_weight": self.transform_weight},
        )  # fmt: skip
        resume, overwrite = restart
        return trainer.fit(resume=resume, overwrite=overwrite)

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ValueError(
                "this detector is not fitted yet; call fit(normal_images) or load a saved one"
            )

    def _prepare(self, X: Any, what: str = "images") -> torch.Tensor:
        from aelab.data import conform

        self._check_fitted()
        c, s, _ = self.image_shape_
        return conform(as_dataset(X, what), image_size=s, channels=c).images

    def _forward(
        self, images: torch.Tensor, names: tuple[str, ...]
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        """One pass over ``images``: every score of ``names`` but ``"latent"``, and the codes when it is named."""
        from aelab.training import map_batches

        pixel = [p for p in names if p in PIXEL_SCORES]
        latent, transform = "latent" in names, "transform" in names
        ts = TRANSFORM_SETS[self.transforms]

        def fn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            if transform:
                # Every set begins with the identity, whose code is the image's own.
                zt, logits = transform_logits(m, x, ts)
                z = zt[0]
            else:
                z = m.encode(x)
            cols = []
            if pixel:
                r = m.decode(z)
                cols.append(torch.stack([pixel_scores(x, r, p) for p in pixel], dim=1))
            if transform:
                cols.append(transform_scores(logits)[:, None])
            if latent:
                cols.append(z)
            # (B, len(pixel) + transform + latent_dim * latent)
            return torch.cat([c.float() for c in cols], dim=1)

        out = map_batches(self.model_, images, fn, batch_size=self.batch_size, device=self.device)
        out = out.numpy()
        order = [*pixel, *(["transform"] if transform else [])]
        comps = {p: out[:, i].astype(np.float64) for i, p in enumerate(order)}
        z = out[:, len(order) :].astype(np.float32) if latent else None
        return comps, z

    def _components(self, images: torch.Tensor, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        comps, z = self._forward(images, names)
        if z is not None:
            comps["latent"] = knn_distance(z, self.latent_bank_, self.k)
        return comps

    def _combine(self, comps: dict[str, np.ndarray]) -> np.ndarray:
        parts = self.score_parts_
        if len(parts) == 1:
            # A single score keeps its units, so a threshold reads as, e.g., an MSE.
            return comps[parts[0]]
        return combine_scores({p: comps[p] for p in parts}, self.score_stats_)

    def score_components(self, X: Any, names: str | None = None) -> dict[str, np.ndarray]:
        """Each score separately, in its own units.

        Parameters
        ----------
        X : ImageDataset, data spec, or array-like of shape (n_samples, H, W[, C])
        names : str, optional
            Scores to compute, joined with ``+`` (e.g. ``"mse+ssim"``); by default
            the parts of this detector's ``score``. ``"latent"`` needs a detector
            fitted with ``"latent"`` in its score.

        Returns
        -------
        dict of str to ndarray of shape (n_samples,)
        """
        self._check_fitted()
        wanted = self.score_parts_ if names is None else parse_score(names)
        if "latent" in wanted and self.latent_bank_ is None:
            raise ValueError(
                "the latent score needs the training codes; fit with 'latent' in the score"
            )
        if "transform" in wanted and "transform" not in self.score_parts_:
            raise ValueError(
                "the transform score needs a head trained on transformations; "
                "fit with 'transform' in the score"
            )
        return self._components(self._prepare(X), wanted)

    def encode(self, X: Any) -> np.ndarray:
        """Codes of the images, e.g. to feed another detector (kNN, Isolation Forest) on them.

        Returns
        -------
        ndarray of shape (n_samples, latent_dim), float32
        """
        from aelab.training import map_batches

        images = self._prepare(X)
        out = map_batches(
            self.model_, images, lambda m, x: m.encode(x).float(), batch_size=self.batch_size,
            device=self.device,
        )  # fmt: skip
        return out.numpy()

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score of every image, higher meaning more anomalous.

        Parameters
        ----------
        X : ImageDataset, data spec, or array-like of shape (n_samples, H, W[, C])

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._combine(self._components(self._prepare(X), self.score_parts_))

    def predict(self, X: Any) -> np.ndarray:
        """0 for normal, 1 for anomalous: ndarray of shape (n_samples,)."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """[P(normal), P(anomaly)] per image, by min-max scaling of the training scores (PyOD's "linear").

        Returns
        -------
        ndarray of shape (n_samples, 2)
        """
        s = self.decision_function(X)
        lo, hi = float(self.decision_scores_.min()), float(self.decision_scores_.max())
        p = np.clip((s - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        return np.stack([1.0 - p, p], axis=1)

    def score_maps(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Reconstructions and per-pixel error maps.

        Returns
        -------
        reconstructions : ndarray of shape (n_samples, C, H, W), float32 in [0, 1]
        maps : ndarray of shape (n_samples, H, W), float32
            The first pixel score of ``score`` per pixel (squared error when the
            score is ``"latent"`` alone).
        """
        from aelab.training import map_batches

        images = self._prepare(X)
        kind = next((p for p in self.score_parts_ if p in PIXEL_SCORES), "mse")

        def fn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            r = m.decode(m.encode(x))
            # (B, C, H, W) + (B, 1, H, W) -> (B, C + 1, H, W)
            return torch.cat([r, error_maps(x, r, kind)[:, None]], dim=1)

        out = map_batches(self.model_, images, fn, batch_size=self.batch_size, device=self.device)
        return out[:, :-1].numpy(), out[:, -1].numpy()

    def evaluate(
        self, normal: Any, anomalous: Any, *, return_scores: bool = False
    ) -> dict[str, Any] | tuple[dict[str, Any], np.ndarray, np.ndarray]:
        """Detection metrics on normal and anomalous images (no threshold tuning).

        Parameters
        ----------
        normal, anomalous : ImageDataset, data spec, or array-like of shape (n_samples, H, W[, C])
        return_scores : bool, default=False
            Also return the scores of both sets, shapes (n_normal,) and (n_anomalous,).

        Returns
        -------
        dict
            ``roc_auc``, ``average_precision``, ``f1``, ``fpr`` and ``tpr`` at
            ``threshold_``, ``mean_score_normal``, ``mean_score_anomalous``, the
            set sizes, ``mean_mse_normal`` and ``mean_mse_anomalous`` (the mean
            per-image squared reconstruction error of each set, the study's
            figures), and for a combined score ``roc_auc_<part>`` of each part.
        """
        n_img = self._prepare(normal, "normal images")
        a_img = self._prepare(anomalous, "anomalous images")
        names = tuple(dict.fromkeys((*self.score_parts_, "mse")))
        cn, ca = self._components(n_img, names), self._components(a_img, names)
        s_n, s_a = self._combine(cn), self._combine(ca)
        out: dict[str, Any] = detection_metrics(s_n, s_a, self.threshold_)
        out["mean_mse_normal"] = float(cn["mse"].mean())
        out["mean_mse_anomalous"] = float(ca["mse"].mean())
        if len(self.score_parts_) > 1:
            from sklearn.metrics import roc_auc_score

            y = np.r_[np.zeros(len(n_img)), np.ones(len(a_img))]
            for p in self.score_parts_:
                out[f"roc_auc_{p}"] = float(roc_auc_score(y, np.r_[cn[p], ca[p]]))
        out["score"] = "+".join(self.score_parts_)
        if return_scores:
            return out, s_n, s_a
        return out

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> Path:
        """Write the detector to ``directory``: its model checkpoint plus JSON and ``.npy`` files.

        Nothing is pickled; :meth:`load` rebuilds an identical detector.
        """
        from aelab.anomaly.persist import save_detector

        self._check_fitted()
        return save_detector(self, directory)

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> ReconstructionDetector:
        """Rebuild a detector written by :meth:`save` (or by ``aelab anomaly fit``).

        Raises
        ------
        ValueError
            When ``directory`` is not a detector folder, or a file in it is missing.
        """
        from aelab.anomaly.persist import load_detector

        return load_detector(cls, directory, device=device)


__all__ = [
    "AUTO_MIN_IMAGES",
    "AUTO_SCORES",
    "DEFAULT_SCORE",
    "SCORES",
    "ReconstructionDetector",
    "anomaly_model_spec",
]
