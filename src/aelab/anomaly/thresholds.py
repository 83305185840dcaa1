"""Thresholds chosen without any anomaly in hand, and the metrics of a detector."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ThresholdRule:
    """How a detector turns scores into a threshold.

    ``kind="fpr"``: the conformal ``(1 - value)`` quantile of the scores of
    held-out normal images (see :func:`conformal_quantile`), so that at most a
    ``value`` share of new normal images is expected to be flagged.
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


# (n + 1) * (1 - rate) lands a hair above a whole number in floating point (20 * 0.95 may be
# 19.000000000000004): a rank one too high would ask for one more calibration image.
_RANK_TOLERANCE = 1e-9

#: A calibration set too small for the ``fpr`` rate is enlarged up to this share of
#: the normal images (see :func:`plan_calibration`); the autoencoder keeps the rest.
MAX_CALIBRATION_SHARE = 0.5


def conformal_rank(n: int, rate: float) -> int:
    """The rank ``ceil((n + 1) * (1 - rate))`` of the conformal threshold among ``n`` scores.

    A rank above ``n`` means that ``n`` scores cannot place the rate: no finite
    threshold guarantees it.
    """
    return math.ceil((n + 1) * (1.0 - rate) - _RANK_TOLERANCE)


def min_calibration_size(rate: float) -> int:
    """The fewest calibration scores whose conformal rank is finite: ``ceil(1 / rate - 1)``.

    19 for a rate of 0.05, 9 for 0.1, 99 for 0.01.
    """
    return max(1, math.ceil(1.0 / rate - 1.0 - _RANK_TOLERANCE))


def conformal_quantile(scores: np.ndarray, rate: float) -> float:
    """The split-conformal threshold: the ``ceil((n + 1) * (1 - rate))``-th smallest of ``scores``.

    If ``scores`` are those of ``n`` held-out normal images, exchangeable with
    a new normal image, that image scores strictly above the threshold with
    probability at most ``rate`` (Vovk et al., *Algorithmic Learning in a
    Random World*; Angelopoulos & Bates, 2021, section 1).

    Parameters
    ----------
    scores : ndarray of shape (n,)
    rate : float
        Target false-positive rate, in (0, 1).

    Returns
    -------
    float
        ``inf`` when ``n`` is below :func:`min_calibration_size` (``rate``): no
        finite threshold keeps the guarantee.
    """
    ranked = np.sort(np.asarray(scores, dtype=np.float64))
    k = conformal_rank(len(ranked), rate)
    return math.inf if k > len(ranked) else float(ranked[k - 1])


@dataclass(frozen=True)
class CalibrationPlan:
    """How many of the normal images are held out to set the threshold, and why.

    Attributes
    ----------
    n_calibration : int
        Images held out of training (the calibration set).
    n_requested : int
        What ``calibration_fraction`` asked for.
    n_needed : int
        The fewest that place the ``fpr`` rate (:func:`min_calibration_size`); 0
        for the other rules, which need no calibration set.
    """

    n_calibration: int
    n_requested: int
    n_needed: int

    @property
    def enlarged(self) -> bool:
        """The calibration set is larger than ``calibration_fraction`` asked for."""
        return self.n_calibration > self.n_requested

    @property
    def sufficient(self) -> bool:
        """The calibration set places the rate (a finite conformal rank)."""
        return self.n_calibration >= self.n_needed


def plan_calibration(n_images: int, fraction: float, rule: ThresholdRule) -> CalibrationPlan:
    """The calibration set of ``n_images`` normal images for ``rule``.

    ``fraction`` of the images (at least 2). When that is too few to place an
    ``fpr`` rate (fewer than :func:`min_calibration_size`), the set grows to
    the needed size, but never beyond :data:`MAX_CALIBRATION_SHARE` of the
    images (nor below what ``fraction`` gave): the autoencoder trains on the
    rest. If even that share is too small, :func:`threshold_from_scores` falls
    back to the largest calibration score.
    """
    requested = max(2, int(round(fraction * n_images)))
    needed = min_calibration_size(rule.value) if rule.kind == "fpr" else 0
    cap = int(MAX_CALIBRATION_SHARE * n_images)
    return CalibrationPlan(max(requested, min(needed, cap)), requested, needed)


def calibration_note(plan: CalibrationPlan, rule: ThresholdRule) -> str | None:
    """One sentence for the user when the calibration set was enlarged or is still too small."""
    if plan.n_needed == 0 or (plan.sufficient and not plan.enlarged):
        return None
    need = (f"placing a false-positive rate of {rule.value:g} needs at least {plan.n_needed} "
            "held-out normal images")  # fmt: skip
    if plan.sufficient:
        return (f"{plan.n_requested} held-out normal images (calibration_fraction) were too few: "
                f"{need}, so {plan.n_calibration} were held out")  # fmt: skip
    return (
        f"only {plan.n_calibration} held-out normal images (at most "
        f"{MAX_CALIBRATION_SHARE:.0%} of the data): {need}; the threshold is the largest "
        f"calibration score (expected false-positive rate about "
        f"{1 / (plan.n_calibration + 1):.2g}); give more normal images or a larger rate"
    )


def threshold_from_scores(
    rule: ThresholdRule, *, train_scores: np.ndarray, calib_scores: np.ndarray | None
) -> float:
    """The score above which an image is called anomalous.

    ``fpr``: :func:`conformal_quantile` of the calibration scores, or their
    largest when they are too few for the rate (the tightest finite threshold
    they give; :func:`calibration_note` says so). ``contamination``: the
    ``(1 - value)`` quantile of the training scores, "higher" method, so that
    at most a ``value`` share of them lies strictly above it.
    """
    if rule.kind == "value":
        return rule.value
    scores = train_scores if rule.kind == "contamination" or calib_scores is None else calib_scores
    if len(scores) == 0:
        raise ValueError("no scores to set a threshold from")
    if rule.kind == "fpr" and calib_scores is not None:
        t = conformal_quantile(scores, rule.value)
        return t if math.isfinite(t) else float(np.max(scores))
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
