"""Anomaly detection by reconstruction error: scores, thresholds, ROC AUC."""

from aelab.anomaly.detector import ReconstructionDetector
from aelab.anomaly.scores import SCORES, error_maps
from aelab.anomaly.thresholds import ThresholdRule, detection_metrics, parse_threshold

__all__ = [
    "SCORES",
    "ReconstructionDetector",
    "ThresholdRule",
    "detection_metrics",
    "error_maps",
    "parse_threshold",
]
