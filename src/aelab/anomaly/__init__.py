"""Anomaly detection with an autoencoder trained on normal images: scores, thresholds, baselines."""

from aelab.anomaly.baselines import KNNDistance, PCAReconstruction, flatten_images
from aelab.anomaly.detector import DEFAULT_SCORE, ReconstructionDetector
from aelab.anomaly.inputs import anomaly_model_spec
from aelab.anomaly.scores import (
    PIXEL_SCORES,
    SCORES,
    combine_scores,
    error_maps,
    knn_distance,
    parse_score,
    pixel_knn_distance,
    pixel_scores,
    score_stats,
)
from aelab.anomaly.selfsup import TRANSFORM_SETS
from aelab.anomaly.thresholds import (
    CalibrationPlan,
    ThresholdRule,
    conformal_quantile,
    detection_metrics,
    min_calibration_size,
    parse_threshold,
)

__all__ = [
    "CalibrationPlan",
    "DEFAULT_SCORE",
    "PIXEL_SCORES",
    "SCORES",
    "TRANSFORM_SETS",
    "KNNDistance",
    "PCAReconstruction",
    "ReconstructionDetector",
    "ThresholdRule",
    "anomaly_model_spec",
    "combine_scores",
    "conformal_quantile",
    "detection_metrics",
    "error_maps",
    "flatten_images",
    "knn_distance",
    "min_calibration_size",
    "parse_score",
    "parse_threshold",
    "pixel_knn_distance",
    "pixel_scores",
    "score_stats",
]
