"""Anomaly detection by reconstruction error: scores, thresholds, ROC AUC."""

from aelab.anomaly.detector import ReconstructionDetector
from aelab.anomaly.scores import (
    PIXEL_SCORES,
    SCORES,
    combine_scores,
    error_maps,
    knn_distance,
    parse_score,
    pixel_scores,
    score_stats,
)
from aelab.anomaly.thresholds import ThresholdRule, detection_metrics, parse_threshold

__all__ = [
    "PIXEL_SCORES",
    "SCORES",
    "ReconstructionDetector",
    "ThresholdRule",
    "combine_scores",
    "detection_metrics",
    "error_maps",
    "knn_distance",
    "parse_score",
    "parse_threshold",
    "pixel_scores",
    "score_stats",
]
