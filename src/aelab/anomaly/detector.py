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

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab._io import read_json, write_json, write_npy
from aelab.anomaly.scores import SCORES, check_score, error_maps, knn_distance, pixel_scores
from aelab.anomaly.thresholds import (
    ThresholdRule,
    detection_metrics,
    parse_threshold,
    threshold_from_scores,
)
from aelab.data.dataset import ImageDataset

_DETECTOR_FILE = "detector.json"
_MODEL_DIR = "model"


def _as_dataset(X: Any, what: str) -> ImageDataset:
    """ImageDataset, a data spec (path or ``fashion-mnist``), or uint8/float images."""
    if isinstance(X, ImageDataset):
        ds = X
    elif isinstance(X, str | Path):
        from aelab.data import load_dataset

        ds = load_dataset(X, progress=False)
    else:
        from aelab.data.arrays import images_from_array

        ds = images_from_array(np.asarray(X), what=what)
    if len(ds) == 0:
        raise ValueError(f"{what} holds no images")
    return ds


class ReconstructionDetector:
    """Flag images an autoencoder trained on normal images cannot reconstruct.

    Parameters
    ----------
    model : str, default="auto"
        A registered model name, or ``"auto"`` to pick one that suits the images
        (see :func:`aelab.models.auto_model_spec`).
    model_overrides : dict, optional
        Config overrides for the model (e.g. ``{"latent_dim": 64}``).
    score : {"mse", "mae", "ssim", "latent"}, default="mse"
        Per-image score: mean squared or absolute reconstruction error (the
        study's measure is ``"mse"``), ``1 - SSIM``, or the mean distance of the
        image's latent code to its ``k`` nearest training codes.
    threshold : str or float, default="fpr:0.05"
        ``"fpr:R"``: flag a share R of held-out normal images;
        ``"contamination:R"``: flag a share R of the training images; a number:
        that score.
    contamination : float, optional
        PyOD's name for ``threshold="contamination:R"``; overrides ``threshold``.
    calibration_fraction : float, default=0.2
        Share of the normal images held out of training to calibrate the threshold.
    epochs, batch_size, lr, loss :
        Training of the autoencoder (see :class:`aelab.training.PretrainConfig`).
    k : int, default=5
        Neighbours of the ``"latent"`` score.
    device : str, default="auto"
    random_state : int, default=0
    verbose : bool, default=True
        Progress bars while training.
    """

    def __init__(
        self,
        *,
        model: str = "auto",
        model_overrides: dict[str, Any] | None = None,
        score: str = "mse",
        threshold: str | float = "fpr:0.05",
        contamination: float | None = None,
        calibration_fraction: float = 0.2,
        epochs: int = 10,
        batch_size: int = 128,
        lr: float = 2e-3,
        loss: str = "mse",
        k: int = 5,
        device: str = "auto",
        random_state: int = 0,
        verbose: bool = True,
    ) -> None:
        self.model = model
        self.model_overrides = model_overrides
        self.score = score
        self.threshold = threshold
        self.contamination = contamination
        self.calibration_fraction = calibration_fraction
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.loss = loss
        self.k = k
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def _params(self) -> dict[str, Any]:
        names = (
            "model", "model_overrides", "score", "threshold", "contamination",
            "calibration_fraction", "epochs", "batch_size", "lr", "loss", "k",
            "device", "random_state", "verbose",
        )  # fmt: skip
        return {n: getattr(self, n) for n in names}

    def _validate(self) -> ThresholdRule:
        check_score(self.score)
        if not 0.0 < self.calibration_fraction < 0.9:
            raise ValueError(
                f"calibration_fraction must be in (0, 0.9), got {self.calibration_fraction}"
            )
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        return parse_threshold(self.threshold, self.contamination)

    def fit(
        self, X: Any, y: None = None, *, out_dir: str | Path | None = None
    ) -> ReconstructionDetector:
        """Train on normal images, then score them and set the threshold.

        Parameters
        ----------
        X : ImageDataset, data spec, or array of shape (n_samples, H, W[, C])
            Normal images only. Labels, if any, are ignored.
        y : None
            Ignored (present for scikit-learn-style pipelines).
        out_dir : path, optional
            Where to keep the training run (checkpoints, metrics).

        Returns
        -------
        self
        """
        from aelab._runtime import seed_everything
        from aelab.data import conform
        from aelab.models import auto_model_spec, create_model
        from aelab.training import PretrainConfig, pretrain

        rule = self._validate()
        data = _as_dataset(X, "normal images")
        if len(data) < 10:
            raise ValueError(
                f"need at least 10 normal images to train and calibrate, got {len(data)}"
            )
        c, h, w = data.image_shape
        if self.model == "auto":
            name, overrides = auto_model_spec(c, h, w)
        else:
            name, overrides = self.model, {}
        overrides = {**overrides, **(self.model_overrides or {}), "num_classes": 1}
        seed_everything(self.random_state)
        net = create_model(name, **overrides)
        cfg = net.config
        data = conform(data, image_size=cfg.image_size, channels=cfg.in_channels)

        rng = np.random.default_rng(self.random_state)
        perm = rng.permutation(len(data))
        n_cal = max(2, int(round(self.calibration_fraction * len(data))))
        train, calib = data.subset(np.sort(perm[n_cal:])), data.subset(np.sort(perm[:n_cal]))

        config = PretrainConfig(
            epochs=self.epochs, batch_size=min(self.batch_size, len(train)), lr=self.lr,
            loss=self.loss, seed=self.random_state, device=self.device, progress=self.verbose,
        )  # fmt: skip
        result = pretrain(net, train, val=calib, config=config, out_dir=out_dir, model_name=name)
        self.model_ = net
        self.model_name_ = name
        self.history_ = result.history
        self.image_shape_ = tuple(int(v) for v in (cfg.in_channels, cfg.image_size, cfg.image_size))
        self.threshold_rule_ = rule
        self.latent_bank_ = self._encode(train.images) if self.score == "latent" else None
        self.decision_scores_ = self._scores(train.images, self_bank=True)
        self.calibration_scores_ = self._scores(calib.images)
        self.threshold_ = threshold_from_scores(
            rule, train_scores=self.decision_scores_, calib_scores=self.calibration_scores_
        )
        self.labels_ = (self.decision_scores_ > self.threshold_).astype(np.int64)
        return self

    # ------------------------------------------------------------------ scoring
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ValueError(
                "this detector is not fitted yet; call fit(normal_images) or load a saved one"
            )

    def _prepare(self, X: Any) -> torch.Tensor:
        from aelab.data import conform

        self._check_fitted()
        c, s, _ = self.image_shape_
        return conform(_as_dataset(X, "images"), image_size=s, channels=c).images

    def _encode(self, images: torch.Tensor) -> np.ndarray:
        from aelab.training import encode

        return encode(self.model_, images, batch_size=self.batch_size, device=self.device)

    def _maps_and_scores(
        self, images: torch.Tensor, score: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from aelab.training import map_batches

        kind = "mse" if score == "latent" else score

        def fn(m: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            r = m.decode(m.encode(x))
            # (B, H, W) maps with the per-image score appended as one extra row
            maps = error_maps(x, r, kind)
            return torch.cat([maps.flatten(1), maps.flatten(1).mean(1, keepdim=True)], 1)

        out = map_batches(self.model_, images, fn, batch_size=self.batch_size, device=self.device)
        h, w = images.shape[-2:]
        return out[:, :-1].reshape(-1, h, w), out[:, -1]

    def _scores(self, images: torch.Tensor, *, self_bank: bool = False) -> np.ndarray:
        if self.score == "latent":
            return knn_distance(
                self._encode(images), self.latent_bank_, self.k, exclude_self=self_bank
            )
        from aelab.training import map_batches

        kind = self.score
        s = map_batches(
            self.model_, images, lambda m, x: pixel_scores(x, m.decode(m.encode(x)), kind),
            batch_size=self.batch_size, device=self.device,
        )  # fmt: skip
        return s.numpy().astype(np.float64)

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score of every image, higher meaning more anomalous.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._scores(self._prepare(X))

    def predict(self, X: Any) -> np.ndarray:
        """0 for normal, 1 for anomalous: ndarray of shape (n_samples,)."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """[P(normal), P(anomaly)] per image, by min-max scaling of the training scores.

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
            The pixel part of the score (squared error for ``"latent"``).
        """
        from aelab.training import reconstruct

        images = self._prepare(X)
        recon = reconstruct(self.model_, images, batch_size=self.batch_size, device=self.device)
        maps, _ = self._maps_and_scores(images, self.score)
        return recon.numpy(), maps.numpy()

    def evaluate(self, normal: Any, anomalous: Any) -> dict[str, float]:
        """ROC AUC, average precision, F1 and FPR at the threshold, and mean scores.

        Also reports ``mean_mse_normal`` and ``mean_mse_anomalous``, the mean
        per-image squared reconstruction error of each set (the study's figures).
        """
        from aelab.training import map_batches

        n_img, a_img = self._prepare(normal), self._prepare(anomalous)
        out = detection_metrics(self._scores(n_img), self._scores(a_img), self.threshold_)

        def mse(images: torch.Tensor) -> float:
            s = map_batches(
                self.model_, images, lambda m, x: pixel_scores(x, m.decode(m.encode(x)), "mse"),
                batch_size=self.batch_size, device=self.device,
            )  # fmt: skip
            return float(s.mean())

        out["mean_mse_normal"], out["mean_mse_anomalous"] = mse(n_img), mse(a_img)
        out["score"] = self.score
        return out

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> Path:
        """Write the detector to ``directory``: its model checkpoint plus JSON and ``.npy`` files.

        Nothing is pickled; :meth:`load` rebuilds an identical detector.
        """
        from aelab.training import save_checkpoint

        self._check_fitted()
        d = Path(directory)
        save_checkpoint(d / _MODEL_DIR, self.model_, model_name=self.model_name_)
        write_npy(d / "decision_scores.npy", self.decision_scores_)
        write_npy(d / "calibration_scores.npy", self.calibration_scores_)
        if self.latent_bank_ is not None:
            write_npy(d / "latent_bank.npy", self.latent_bank_)
        write_json(
            d / _DETECTOR_FILE,
            {
                "kind": "aelab.ReconstructionDetector",
                "params": self._params(),
                "threshold_": self.threshold_,
                "threshold_rule": dataclasses.asdict(self.threshold_rule_),
                "image_shape": list(self.image_shape_),
                "model_name": self.model_name_,
            },
        )
        return d

    @classmethod
    def load(cls, directory: str | Path, *, device: str | None = None) -> ReconstructionDetector:
        """Rebuild a detector written by :meth:`save` (or by ``aelab anomaly fit``)."""
        from aelab.training import load_model

        d = Path(directory)
        meta_path = d / _DETECTOR_FILE
        if not meta_path.is_file():
            raise ValueError(
                f"{d} is not a detector directory (no {_DETECTOR_FILE}); "
                "make one with `aelab anomaly fit NORMAL_DATA --out DIR`"
            )
        meta = read_json(meta_path)
        if meta.get("kind") != "aelab.ReconstructionDetector":
            raise ValueError(f"{meta_path} does not describe an aelab ReconstructionDetector")
        params = dict(meta["params"])
        if device is not None:
            params["device"] = device
        det = cls(**params)
        det.model_, _ = load_model(d / _MODEL_DIR, device="cpu", which="last")
        det.model_name_ = meta["model_name"]
        det.image_shape_ = tuple(meta["image_shape"])
        det.threshold_ = float(meta["threshold_"])
        det.threshold_rule_ = ThresholdRule(**meta["threshold_rule"])
        det.decision_scores_ = np.load(d / "decision_scores.npy", allow_pickle=False)
        det.calibration_scores_ = np.load(d / "calibration_scores.npy", allow_pickle=False)
        bank = d / "latent_bank.npy"
        det.latent_bank_ = np.load(bank, allow_pickle=False) if bank.exists() else None
        det.labels_ = (det.decision_scores_ > det.threshold_).astype(np.int64)
        det.history_ = []
        return det


__all__ = ["SCORES", "ReconstructionDetector"]
