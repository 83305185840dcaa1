"""Thresholds chosen without any anomaly in hand, and the metrics of a detector."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdRule:
    """How a detector turns scores into a threshold.

    ``kind="fpr"``: the ``(1 - value)`` quantile of scores of held-out normal
    images, so about ``value`` of normal images are flagged.
    ``kind="contamination"``: the ``(1 - value)`` quantile of the training
    scores, for users who know what fraction of their data is anomalous.
    ``kind="value"``: a fixed score.
    """

    kind: str
    value: float

    def __str__(self) -> str:
        return f"{self.kind}:{self.value:g}"


def parse_threshold(spec: str | float, contamination: float | None = None) -> ThresholdRule:
    """Parse ``"fpr:0.05"``, ``"contamination"`` / ``"contamination:0.1"`` or a number.

    ``contamination``, when given, overrides ``spec`` (PyOD's vocabulary).

    Raises
    ------
    ValueError
        For a rate outside (0, 1) (contamination: (0, 0.5)), or a score that is
        NaN or infinite (a NaN threshold would flag nothing).
    """
    hint = "use 'fpr:0.05', 'contamination:0.1' or a finite number"
    if contamination is not None:
        if not 0.0 < contamination < 0.5:
            raise ValueError(f"contamination must be in (0, 0.5), got {contamination}")
        return ThresholdRule("contamination", float(contamination))
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        if not math.isfinite(spec):
            raise ValueError(f"threshold {spec!r} is not a finite number; {hint}")
        return ThresholdRule("value", float(spec))
    text = str(spec).strip().lower()
    kind, _, val = text.partition(":")
    if kind in ("fpr", "contamination"):
        if not val:
            raise ValueError(f"threshold {spec!r} needs a rate, e.g. '{kind}:0.05'")
        try:
            rate = float(val)
        except ValueError:
            raise ValueError(f"threshold {spec!r}: {val!r} is not a number; {hint}") from None
        if not 0.0 < rate < 1.0:  # also refuses NaN
            raise ValueError(f"the rate in threshold {spec!r} must be in (0, 1)")
        return ThresholdRule(kind, rate)
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"threshold {spec!r} not understood; {hint}") from None
    if not math.isfinite(value):
        raise ValueError(f"threshold {spec!r} is not a finite number; {hint}")
    return ThresholdRule("value", value)


def threshold_from_scores(
    rule: ThresholdRule, *, train_scores: np.ndarray, calib_scores: np.ndarray | None
) -> float:
    """The score above which an image is called anomalous.

    The quantile uses the "higher" method so that at most a ``value`` share of
    the calibration scores lie strictly above the threshold.
    """
    if rule.kind == "value":
        return rule.value
    scores = train_scores if rule.kind == "contamination" or calib_scores is None else calib_scores
    if len(scores) == 0:
        raise ValueError("no scores to set a threshold from")
    return float(np.quantile(scores, 1.0 - rule.value, method="higher"))


def detection_metrics(
    normal: np.ndarray, anomalous: np.ndarray, threshold: float
) -> dict[str, float]:
    """ROC AUC, average precision, F1, FPR and TPR at ``threshold``, and mean scores.

    Parameters
    ----------
    normal, anomalous : ndarray of shape (n_normal,), (n_anomalous,)
        Scores, higher meaning more anomalous.
    threshold : float
        Scores strictly above it are called anomalous.
    """
    from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

    normal = np.asarray(normal, dtype=np.float64)
    anomalous = np.asarray(anomalous, dtype=np.float64)
    if len(normal) == 0 or len(anomalous) == 0:
        raise ValueError(
            f"evaluation needs normal and anomalous images; got {len(normal)} normal and {len(anomalous)} anomalous"
        )
    y = np.r_[np.zeros(len(normal)), np.ones(len(anomalous))]
    s = np.r_[normal, anomalous]
    pred = (s > threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, s)),
        "average_precision": float(average_precision_score(y, s)),
        "f1": float(f1_score(y, pred, zero_division=0.0)),
        "fpr": float(pred[: len(normal)].mean()),
        "tpr": float(pred[len(normal) :].mean()),
        "threshold": float(threshold),
        "mean_score_normal": float(normal.mean()),
        "mean_score_anomalous": float(anomalous.mean()),
        "n_normal": len(normal),
        "n_anomalous": len(anomalous),
    }
