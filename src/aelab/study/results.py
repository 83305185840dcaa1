"""What a study run produced, as typed records: the report renders a :class:`StudyResults`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aelab.tasks import (
    AnomalyEvalResult,
    AnomalyFitResult,
    ClusterResult,
    FinetuneResult,
    PredictResult,
    PretrainResult,
    ReconstructResult,
    Record,
    SplitSizes,
)

__all__ = [
    "AnomalyStep",
    "ClusterStep",
    "DataSummary",
    "PredictStep",
    "StepTime",
    "StudyResults",
]


@dataclass(frozen=True)
class DataSummary(Record):
    """The data the study ran on, and how it was split."""

    source: str
    n_source: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    splits: SplitSizes
    test: str
    n_test: int
    model: str


@dataclass(frozen=True)
class PredictStep(Record):
    """The submission of the best fine-tuning run, and every run's test accuracy."""

    best_run: str
    prediction: PredictResult
    test_accuracy: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterStep(Record):
    """EKM on the class subset: the classes, their sizes, whose latents, and the fits."""

    classes: tuple[str, ...]
    class_sizes: tuple[int, ...]
    encoder: str
    result: ClusterResult
    figure: Path


@dataclass(frozen=True)
class AnomalyStep(Record):
    """The detector trained on the normal class and its test on held-out images."""

    normal_class: str
    anomalies: str
    fit: AnomalyFitResult
    evaluation: AnomalyEvalResult


@dataclass(frozen=True)
class StepTime(Record):
    """Wall time of one step, and whether it was reused from an earlier run."""

    step: str
    wall_s: float
    reused: bool


@dataclass(frozen=True)
class StudyResults(Record):
    """Every result of one study run: what ``report.html`` shows.

    Attributes
    ----------
    config_toml : str
        The configuration the run used (what ``config.toml`` holds).
    environment : dict of str to str
        Versions and hardware.
    """

    data: DataSummary
    pretrain: PretrainResult
    finetunes: tuple[FinetuneResult, ...]
    predict: PredictStep
    cluster: ClusterStep
    anomaly: AnomalyStep
    reconstruct: ReconstructResult
    timings: tuple[StepTime, ...]
    total_wall_s: float
    seed: int
    config_toml: str
    environment: dict[str, str]
