"""Save and load a fitted :class:`~aelab.anomaly.ReconstructionDetector`: JSON, ``.npy``, safetensors.

Nothing is pickled. A detector folder holds the model checkpoint (``model/``),
the scores of the training and calibration images, the training codes when
the ``"latent"`` score needs them, the normal images when the ``"pixel"`` score
needs them, and ``detector.json`` (written last, so its
presence marks a complete folder).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from aelab.anomaly.thresholds import CalibrationPlan, ThresholdRule, min_calibration_size
from aelab.files import leftover_temporaries, read_json, write_json, write_npy

DETECTOR_FILE = "detector.json"
_MODEL_DIR = "model"
_KIND = "aelab.ReconstructionDetector"
# 2: the "rotation" score became "transform" (with ``transforms``), rotation_weight
# became transform_weight, and ``min_steps`` appeared. 3: the "pixel" score and its
# bank (``pixel_bank.npy``); a format-2 folder loads unchanged.
_FORMAT = 3


def save_detector(det: Any, directory: str | Path) -> Path:
    """Write fitted detector ``det`` to ``directory``; returns the folder. Trusts ``det`` is fitted."""
    from aelab.training import save_checkpoint

    d = Path(directory)
    # A save that a kill cut short left its temporary files: this one replaces them.
    for tmp in leftover_temporaries(d):
        tmp.unlink(missing_ok=True)
    save_checkpoint(d / _MODEL_DIR, det.model_, model_name=det.model_name_)
    write_npy(d / "decision_scores.npy", det.decision_scores_)
    write_npy(d / "calibration_scores.npy", det.calibration_scores_)
    if det.latent_bank_ is not None:
        write_npy(d / "latent_bank.npy", det.latent_bank_)
    if det.pixel_bank_ is not None:
        write_npy(d / "pixel_bank.npy", det.pixel_bank_)
    write_json(
        d / DETECTOR_FILE,
        {
            "kind": _KIND,
            "format": _FORMAT,
            "params": det.get_params(deep=False),
            "epochs_": det.epochs_,
            "score_parts": list(det.score_parts_),
            "threshold_": det.threshold_,
            "threshold_rule": dataclasses.asdict(det.threshold_rule_),
            "calibration": dataclasses.asdict(det.calibration_plan_),
            "score_stats": {k: list(v) for k, v in det.score_stats_.items()},
            "image_shape": list(det.image_shape_),
            "model_name": det.model_name_,
        },
    )
    return d


def load_detector(cls: type, directory: str | Path, *, device: str | None = None) -> Any:
    """Rebuild a detector of class ``cls`` from a folder written by :func:`save_detector`.

    Raises
    ------
    ValueError
        When ``directory`` is not a detector folder, or a file in it is missing.
    """
    from aelab.training import load_model

    d = Path(directory)
    meta_path = d / DETECTOR_FILE
    if not meta_path.is_file():
        raise ValueError(
            f"{d} is not a detector folder (no {DETECTOR_FILE}); "
            "make one with `aelab anomaly fit NORMAL_DATA --out DIR`"
        )
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("kind") != _KIND:
        raise ValueError(f"{meta_path} does not describe an aelab ReconstructionDetector")
    params = _upgrade_params(dict(meta["params"]), int(meta.get("format", 1)))
    if device is not None:
        params["device"] = device
    det = cls(**params)
    parts, _ = det._validate()
    det.score_parts_ = tuple(meta["score_parts"]) if "score_parts" in meta else parts
    det.model_, _ = load_model(d / _MODEL_DIR, device="cpu", which="last")
    det.model_name_ = meta["model_name"]
    det.epochs_ = int(meta.get("epochs_", params["epochs"]))
    det.image_shape_ = tuple(int(v) for v in meta["image_shape"])
    det.threshold_ = float(meta["threshold_"])
    det.threshold_rule_ = ThresholdRule(**meta["threshold_rule"])
    det.score_stats_ = {
        _upgrade_score(k): (float(v[0]), float(v[1])) for k, v in meta["score_stats"].items()
    }
    det.decision_scores_ = _load_npy(d / "decision_scores.npy")
    det.calibration_scores_ = _load_npy(d / "calibration_scores.npy")
    det.latent_bank_ = _load_npy(d / "latent_bank.npy") if "latent" in det.score_parts_ else None
    det.pixel_bank_ = _load_npy(d / "pixel_bank.npy") if "pixel" in det.score_parts_ else None
    det.calibration_plan_ = _calibration_plan(
        meta, det.threshold_rule_, len(det.calibration_scores_)
    )
    det.labels_ = (det.decision_scores_ > det.threshold_).astype(np.int64)
    det.history_ = []
    return det


def _calibration_plan(meta: dict[str, Any], rule: ThresholdRule, n: int) -> CalibrationPlan:
    """The saved calibration plan; a folder written before it was saved held out ``n`` as asked."""
    if "calibration" in meta:
        return CalibrationPlan(**{k: int(v) for k, v in meta["calibration"].items()})
    return CalibrationPlan(n, n, min_calibration_size(rule.value) if rule.kind == "fpr" else 0)


def _upgrade_score(name: str) -> str:
    return "transform" if name == "rotation" else name


def _upgrade_params(params: dict[str, Any], fmt: int) -> dict[str, Any]:
    """Constructor arguments of a detector saved in an older format, in today's names."""
    if fmt < 2:
        # Format 1 knew only the quarter turns, under the names "rotation" and rotation_weight,
        # and trained for ``epochs`` alone.
        params["transform_weight"] = params.pop("rotation_weight", 1.0)
        params["transforms"] = "rotations"
        params.setdefault("min_steps", 0)
    return params


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ValueError(f"{path.parent}: incomplete detector folder, {path.name} is missing")
    return np.load(path, allow_pickle=False)
