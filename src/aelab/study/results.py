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
    """The data the study ran on, and how it was split (and ``data.unlabeled``, when given)."""

    source: str
    n_source: int
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    splits: SplitSizes
    test: str
    n_test: int
    model: str
    unlabeled: str = ""
    n_unlabeled: int = 0


@dataclass(frozen=True)
class PredictStep(Record):
    """The submission and who wrote it, and every fine-tuning run's test accuracy.

    ``best_run`` is ``"default"`` (the default-recipe run) or the preset of the
    ablation run of best validation accuracy; ``test_accuracy`` is keyed the same way.
    """

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
    default_run : FinetuneResult or None
        The run of the default recipe from the same encoder (``[finetune] submit = "default"``).
    default_shortened : str
        How its schedule was shortened from the recipe's (``--quick``); empty when it was not.
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
    default_run: FinetuneResult | None = None
    default_shortened: str = ""
