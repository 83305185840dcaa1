"""Anomaly detection by reconstruction error (Part 3 of the study).

:class:`ReconstructionDetector` trains an autoencoder on normal images only;
an image it cannot reconstruct (or whose code lies far from every normal code)
scores high. The vocabulary is PyOD's: ``fit``, ``decision_function`` (higher
is more anomalous), ``predict`` (0 normal, 1 anomaly), ``contamination``,
``threshold_``, ``decision_scores_``, ``labels_``.

The threshold needs no anomalies: by default a share of the normal images is
held out of training and the threshold is their conformal quantile for a
target false-positive rate (``"fpr:0.05"``): at most that share of new normal
images is expected above it (:func:`aelab.anomaly.thresholds.conformal_quantile`).

The module holds the estimator; :mod:`~aelab.anomaly.fitting` trains its
model, :mod:`~aelab.anomaly.passes` runs it over images, and
:mod:`~aelab.anomaly.persist` saves and loads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, validate_parameter_constraints

from aelab.anomaly.fitting import build_model, split_calibration, train_model
from aelab.anomaly.inputs import anomaly_model_spec, as_dataset
from aelab.anomaly.passes import encode_images, forward_scores, reconstruct_with_maps
from aelab.anomaly.scores import (
    PIXEL_SCORES,
    SCORES,
    combine_scores,
    flat_pixels,
    knn_distance,
    parse_score,
    pixel_knn_distance,
    score_stats,
)
from aelab.anomaly.selfsup import check_transforms
from aelab.anomaly.thresholds import (
    ThresholdRule,
    calibration_note,
    detection_metrics,
    parse_threshold,
    plan_calibration,
    threshold_from_scores,
)
from aelab.data.dataset import ImageDataset

#: The score of ``ReconstructionDetector()``: chosen on the validation protocol of
#: ``benchmarks/anomaly_oneclass.py`` (held-out training images, never the test set).
DEFAULT_SCORE = "auto"

#: What ``score="auto"`` means: the full score from :data:`AUTO_MIN_IMAGES` normal
#: images on; below that pixel kNN (``"pixel"``), because the code neighbourhoods
#: and the transformation head of a model trained on a few dozen images do not
#: carry over to new images, and its reconstruction error is worse than the raw
#: pixels' neighbours. Chosen on the validation protocol of
#: ``benchmarks/anomaly_smallset_screen.py`` (seed 0, mean AUROC %): sklearn digits
#: with about 60 images a class, 99.63 for "pixel", 99.45 for "mse+pixel", 98.68 for
#: "mse" (the former small-set score), 97.73 for the full score (seed 1: 99.63,
#: 99.18, 97.39, 98.65); the bundled
#: Fashion-MNIST subset with 200 a class, 94.30 for the full score, 92.60 for
#: "mse", 91.30 for "pixel". 150 is a round number between the two (60-90 and
#: 200-300 images), not a tuned one; Fashion-MNIST with 5,000 chose the full
#: score too (see ``benchmarks/README_anomaly.md``).
AUTO_SCORES: tuple[str, str] = ("mse+latent+transform", "pixel")
AUTO_MIN_IMAGES = 150


class ReconstructionDetector(BaseEstimator):
    """Flag images an autoencoder trained on normal images cannot reconstruct or place.

    With no arguments this is the detector that ``benchmarks/anomaly_oneclass.py``
    measures (and what ``aelab anomaly fit`` and the study use): a small member
    of the ``convae`` family whose head also learns which quarter turn was
    applied to a normal image, trained for 8 epochs (at least ``min_steps``
    steps), scoring ``"mse+latent+transform"`` (pixel kNN, ``"pixel"``, on fewer
    than 150 images).

    Parameters
    ----------
    model : str, default="auto"
        A registered model name, or ``"auto"`` for the member of the ``convae``
        family that suits the images, narrowed for this task (see
        :func:`anomaly_model_spec`).
    model_overrides : dict, optional
        Config overrides for the model (e.g. ``{"latent_dim": 128}``).
    score : str, default="auto"
        Per-image score: ``"auto"`` for ``"mse+latent+transform"`` from 150
        normal images on and ``"pixel"`` below (see :data:`AUTO_SCORES`; the
        choice is what :meth:`score_note` says), or one of:

        - ``"mse"``: mean squared reconstruction error (the study's measure);
        - ``"mae"``: mean absolute reconstruction error;
        - ``"ssim"``: mean of ``1 - SSIM`` over local windows;
        - ``"latent"``: mean distance of the image's code to its ``k`` nearest
          codes of the training images;
        - ``"pixel"``: mean distance of the image's raw pixels (scaled to
          [0, 1]) to those of its ``k`` nearest normal images, the held-out
          ones included (each normal image scored without itself): pixel
          kNN, which reads no model;
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
        threshold and standardise combined scores. With ``"fpr:R"`` it grows
        when it is too small to place R (fewer than ``1/R - 1`` images), up to
        half the images (see :func:`aelab.anomaly.thresholds.plan_calibration`).
    epochs : int, default=8
        Passes over the training images.
    min_steps : int, default=600
        Train for more epochs when ``epochs`` would make fewer optimizer
        steps than this, so that a small set (a few hundred images) still
        trains as long as a large one.
    batch_size, lr, loss :
        Training of the autoencoder (see :class:`aelab.training.PretrainConfig`).
    k : int, default=5
        Neighbours of the ``"latent"`` and ``"pixel"`` scores.
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
    n_calibration_ : int
        Held-out normal images that set the threshold (``calibration_plan_.n_calibration``).
    calibration_plan_ : CalibrationPlan
        How many normal images were held out to set the threshold
        (``n_calibration``), how many ``calibration_fraction`` asked for and how
        many the ``fpr`` rate needs; :meth:`calibration_note` says when they differ.
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
    pixel_bank_ : ndarray of shape (n_normal, C*H*W), uint8, or None
        Every normal image (training and held out), flattened, kept when
        ``"pixel"`` is part of the score.
    """

    #: Every parameter and the values it takes, declared once (scikit-learn's
    #: convention): :meth:`get_params`, the saved ``detector.json`` and
    #: :meth:`_validate` read them from here and from ``__init__``.
    _parameter_constraints: dict[str, list[Any]] = {
        "model": [str],
        "model_overrides": [Mapping, None],
        "score": [str],
        "transforms": [str],
        "threshold": [str, Real],
        "contamination": [Real, None],
        "calibration_fraction": [Interval(Real, 0.0, 0.9, closed="neither")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "min_steps": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        # The training config checks these two (a finite positive rate, a known loss).
        "lr": [Real],
        "loss": [str],
        "k": [Interval(Integral, 1, None, closed="left")],
        "transform_weight": [Interval(Real, 0.0, None, closed="left")],
        "device": [str],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["verbose"],
    }

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
    def check_params(self) -> ReconstructionDetector:
        """Check every parameter as :meth:`fit` does, without fitting; one-line ValueError otherwise."""
        self._validate()
        return self

    def _validate(self) -> tuple[tuple[str, ...] | None, ThresholdRule]:
        """Check every argument; the score parts (``None`` for ``"auto"``) and the threshold rule."""
        params = self.get_params(deep=False)
        validate_parameter_constraints(
            self._parameter_constraints, params, caller_name=type(self).__name__
        )
        for name, allowed in self._parameter_constraints.items():
            # scikit-learn takes True for an integer; a count given as a flag is a slip.
            if isinstance(params[name], bool) and any(isinstance(c, Interval) for c in allowed):
                raise ValueError(f"{name} must be a number, got {params[name]!r}")
        check_transforms(self.transforms)
        parts = None if self.score == "auto" else parse_score(self.score)
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

        parts, rule = self._validate()
        data = as_dataset(X, "normal images")
        if len(data) < 10:
            raise ValueError(
                f"need at least 10 normal images to train and calibrate, got {len(data)}"
            )
        if parts is None:
            parts = parse_score(AUTO_SCORES[len(data) < AUTO_MIN_IMAGES])
        params = self.get_params(deep=False)
        net, name = build_model(params, parts, data.image_shape)
        cfg = net.config
        data = conform(data, image_size=cfg.image_size, channels=cfg.in_channels)
        plan = plan_calibration(len(data), self.calibration_fraction, rule)
        rows = split_calibration(len(data), plan.n_calibration, self.random_state)
        train, calib = data.subset(rows[0]), data.subset(rows[1])

        result, self.epochs_ = train_model(
            net, name, params, parts, (train, calib), out_dir, (resume, overwrite)
        )
        self.model_ = net
        self.model_name_ = name
        self.history_ = result.history
        self.image_shape_ = (int(cfg.in_channels), int(cfg.image_size), int(cfg.image_size))
        self.threshold_rule_ = rule
        self.calibration_plan_ = plan
        self.score_parts_ = parts
        self._calibrate(data, rows)
        return self

    def _calibrate(self, data: ImageDataset, rows: tuple[np.ndarray, np.ndarray]) -> None:
        """Score the training and held-out images; set the score scales and the threshold.

        ``rows`` are the row indices of ``data`` trained on and held out.
        """
        parts, rule = self.score_parts_, self.threshold_rule_
        train, calib = data.subset(rows[0]), data.subset(rows[1])
        model_parts = tuple(p for p in parts if p != "pixel")
        # The pixel score alone reads no model.
        train_parts, z_train = (
            self._forward(train.images, model_parts) if model_parts else ({}, None)
        )
        self.latent_bank_ = z_train
        if z_train is not None:
            # Leave-one-out: a training image is not its own neighbour.
            train_parts["latent"] = knn_distance(z_train, z_train, self.k, exclude_self=True)
        calib_parts = self._components(calib.images, model_parts)
        self.pixel_bank_ = None
        if "pixel" in parts:
            # The bank is every normal image, the held-out ones too: on a small set they
            # are a fifth of it or more. Each normal image is scored without itself
            # (leave-one-out), so the held-out scores stay those of new normal images.
            self.pixel_bank_ = flat_pixels(data.images)
            loo = pixel_knn_distance(self.pixel_bank_, self.pixel_bank_, self.k, exclude_self=True)
            train_parts["pixel"], calib_parts["pixel"] = loo[rows[0]], loo[rows[1]]
        self.score_stats_ = score_stats(calib_parts)
        self.decision_scores_ = self._combine(train_parts)
        self.calibration_scores_ = self._combine(calib_parts)
        self.threshold_ = threshold_from_scores(
            rule, train_scores=self.decision_scores_, calib_scores=self.calibration_scores_
        )
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)

    @property
    def n_calibration_(self) -> int:
        """Held-out normal images that set the threshold."""
        return self.calibration_plan_.n_calibration

    def score_note(self) -> str:
        """The score this detector uses and, when ``score="auto"`` chose it, why.

        E.g. ``"pixel (auto: fewer than 150 normal images, 90 here)"``.
        """
        self._check_fitted()
        used = "+".join(self.score_parts_)
        if self.score != "auto":
            return used
        n = len(self.decision_scores_) + len(self.calibration_scores_)
        rule = (
            f"fewer than {AUTO_MIN_IMAGES:,}"
            if n < AUTO_MIN_IMAGES
            else f"{AUTO_MIN_IMAGES:,} or more"
        )
        return f"{used} (auto: {rule} normal images, {n:,} here)"

    def calibration_note(self) -> str | None:
        """A sentence when the calibration set was enlarged for the rate, or is still too small."""
        self._check_fitted()
        return calibration_note(self.calibration_plan_, self.threshold_rule_)

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
        return forward_scores(
            self.model_, images, names, transforms=self.transforms,
            batch_size=self.batch_size, device=self.device,
        )  # fmt: skip

    def _components(self, images: torch.Tensor, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        model_names = tuple(p for p in names if p != "pixel")
        comps: dict[str, np.ndarray] = {}
        if model_names:
            comps, z = self._forward(images, model_names)
            if z is not None:
                comps["latent"] = knn_distance(z, self.latent_bank_, self.k)
        if "pixel" in names:
            comps["pixel"] = pixel_knn_distance(flat_pixels(images), self.pixel_bank_, self.k)
        return {p: comps[p] for p in names}

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
            the parts of this detector's ``score``. ``"latent"`` and ``"pixel"``
            need a detector fitted with them in its score.

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
        if "pixel" in wanted and self.pixel_bank_ is None:
            raise ValueError(
                "the pixel score needs the normal images; fit with 'pixel' in the score"
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
        images = self._prepare(X)
        return encode_images(self.model_, images, batch_size=self.batch_size, device=self.device)

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
        images = self._prepare(X)
        kind = next((p for p in self.score_parts_ if p in PIXEL_SCORES), "mse")
        return reconstruct_with_maps(
            self.model_, images, kind, batch_size=self.batch_size, device=self.device
        )

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
