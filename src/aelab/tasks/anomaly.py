"""The anomaly tasks: fit a detector on normal images, score images, evaluate with figures.

The detector's settings are :class:`~aelab.anomaly.ReconstructionDetector`'s
own constructor parameters: :data:`AnomalyFitOptions` is built from its
signature, so a default changed there is the default of ``aelab anomaly fit``
and of the study, with nothing declared twice.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aelab.anomaly import ReconstructionDetector
from aelab.data.dataset import ImageDataset
from aelab.files import write_csv
from aelab.tasks.modeling import check_model_overrides
from aelab.tasks.options import with_overrides
from aelab.tasks.outputs import output_file, output_folder
from aelab.tasks.results import Record
from aelab.tasks.source import DataArg, load_images, split_by_class, subsample

__all__ = [
    "AnomalyEvalResult",
    "AnomalyFitOptions",
    "AnomalyFitResult",
    "AnomalyScoreResult",
    "DetectionMetrics",
    "run_anomaly_eval",
    "run_anomaly_fit",
    "run_anomaly_score",
]

PathLike = str | os.PathLike[str]
_DETECTOR_FILES = ("detector.json", "model")


def _detector_fields() -> list[tuple[str, Any, Any]]:
    hints = typing.get_type_hints(ReconstructionDetector.__init__)
    params = inspect.signature(ReconstructionDetector.__init__).parameters
    return [(n, hints[n], field(default=p.default)) for n, p in params.items() if n != "self"]


def _detector_params(self: Any) -> dict[str, Any]:
    """The :class:`ReconstructionDetector` parameters among these settings."""
    names = inspect.signature(ReconstructionDetector.__init__).parameters
    return {n: getattr(self, n) for n in names if n != "self"}


_DOC = """Settings of :func:`run_anomaly_fit`: the detector's parameters plus the below.

Parameters
----------
normal_class : str or int, optional
    Train on this class (index or name) of a labelled source only.
max_images : int
    Train on at most this many images, a seeded sample (0: all).
"""

def _check_options(self: Any) -> None:
    """Every setting checked when the options are made, before any training."""
    self.model_overrides = check_model_overrides(self.model_overrides)
    ReconstructionDetector(**self.detector_params()).check_params()
    if isinstance(self.max_images, bool) or self.max_images < 0:
        raise ValueError(f"max_images must be >= 0 (0: all), got {self.max_images!r}")


#: Settings of :func:`run_anomaly_fit`: ``normal_class`` (train on this class
#: of a labelled source only), ``max_images`` (a seeded cap, 0: all), and every
#: parameter of :class:`~aelab.anomaly.ReconstructionDetector` with its default.
AnomalyFitOptions = dataclasses.make_dataclass(
    "AnomalyFitOptions",
    [
        ("normal_class", str | int | None, field(default=None)),
        ("max_images", int, field(default=0)),
        *_detector_fields(),
    ],  # fmt: skip
    namespace={
        "detector_params": _detector_params,
        "__post_init__": _check_options,
        "__module__": __name__,
        "__doc__": _DOC,
    },
)


@dataclass(frozen=True)
class AnomalyFitResult(Record):
    """What :func:`run_anomaly_fit` wrote.

    Attributes
    ----------
    path : Path
        The detector folder.
    n_train : int
        Normal images the autoencoder trained on (the rest calibrated the threshold).
    threshold : float
    rule : str
        How the threshold was set (``fpr:0.05``...).
    score : str
        The score the detector uses, with why when ``auto`` chose it (e.g.
        ``"pixel (auto: fewer than 150 normal images, 90 here)"``).
    history : tuple of dict
        One row per training epoch.
    n_calibration : int
        Held-out normal images that set the threshold (0 in records written
        before it was recorded).
    target_fpr : float or None
        The false-positive rate the threshold aims at (the ``fpr`` rule's rate).
    calibration_note : str or None
        Why the calibration set is larger than ``calibration_fraction`` asked,
        or that it is still too small for the rate.
    """

    path: Path
    n_train: int
    threshold: float
    rule: str
    score: str
    history: tuple[dict[str, float], ...]
    n_calibration: int = 0
    target_fpr: float | None = None
    calibration_note: str | None = None


def _normal_images(data: DataArg, opts: Any) -> ImageDataset:
    ds = load_images(data)
    if opts.normal_class is not None:
        ds, _ = split_by_class(ds, [opts.normal_class])
        if len(ds) == 0:
            raise ValueError(
                f"no normal images: class {opts.normal_class!r} has no images in this data"
            )
    ds = subsample(ds, opts.max_images, opts.random_state)
    if len(ds) == 0:
        raise ValueError("no normal images to train on")
    return ds


def run_anomaly_fit(
    data: DataArg,
    out: PathLike,
    config: Any = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    **overrides: Any,
) -> AnomalyFitResult:
    """Train a :class:`~aelab.anomaly.ReconstructionDetector` on normal images; save it to ``out``.

    Parameters
    ----------
    data : DataArg
        Normal images (or a labelled source with ``normal_class``).
    out : path
        The detector folder; its training run (checkpoints, ``metrics.csv``)
        goes to ``out/train``.
    config : AnomalyFitOptions, optional
        The settings; ``overrides`` change fields of it.
    resume : bool
        Continue an interrupted fit (its training run, or the save after it):
        the detector comes out as one never interrupted.
    overwrite : bool
        Replace a detector already in ``out``.

    Returns
    -------
    AnomalyFitResult
    """
    from aelab.training import distributed as dist_utils

    opts = with_overrides(config or AnomalyFitOptions(), overrides)
    # A resumed fit may find the model folder of a save that was cut short; never a whole detector.
    names = ("detector.json",) if resume else _DETECTOR_FILES
    with output_folder(out, "anomaly fit", names=names, inputs=[data], overwrite=overwrite) as out:
        det = ReconstructionDetector(**opts.detector_params()).fit(
            _normal_images(data, opts), out_dir=out / "train", resume=resume, overwrite=overwrite
        )
        # Every rank holds the same trained detector; one writes it.
        path = det.save(out) if dist_utils.is_main() else out
        dist_utils.barrier()
    rule = det.threshold_rule_
    return AnomalyFitResult(
        path=path, n_train=len(det.decision_scores_), threshold=float(det.threshold_),
        rule=str(rule), score=det.score_note(), history=tuple(det.history_),
        n_calibration=det.n_calibration_, calibration_note=det.calibration_note(),
        target_fpr=rule.value if rule.kind == "fpr" else None,
    )  # fmt: skip


@dataclass(frozen=True)
class AnomalyScoreResult(Record):
    """What :func:`run_anomaly_score` wrote: ``id,score,is_anomaly`` rows."""

    path: Path
    n: int
    n_anomalies: int
    threshold: float


def run_anomaly_score(
    data: DataArg,
    detector: PathLike,
    out: PathLike,
    *,
    device: str = "auto",
    overwrite: bool = False,
) -> AnomalyScoreResult:
    """Score images with a saved detector; write ``id,score,is_anomaly`` to ``out``."""
    with output_file(out, "anomaly score", inputs=[detector, data], overwrite=overwrite) as out:
        det = ReconstructionDetector.load(detector, device=device)
        ds = load_images(data)
        s = det.decision_function(ds)
        flag = (s > det.threshold_).astype(int)
        rows = zip(ds.ids, s.tolist(), flag.tolist(), strict=True)
        path = write_csv(out, ["id", "score", "is_anomaly"], rows)
    return AnomalyScoreResult(path=path, n=len(s), n_anomalies=int(flag.sum()),
                              threshold=float(det.threshold_))  # fmt: skip


@dataclass(frozen=True)
class DetectionMetrics(Record):
    """How well a detector separates normal from anomalous images.

    Attributes
    ----------
    score : str
    roc_auc, average_precision : float
    f1, fpr, tpr : float
        At the detector's threshold.
    threshold : float
    mean_score_normal, mean_score_anomalous : float
    mean_mse_normal, mean_mse_anomalous : float
        Mean per-image squared reconstruction error of each set (the study's figures).
    n_normal, n_anomalous : int
    part_roc_auc : dict of str to float
        ROC AUC of each part of a combined score.
    """

    score: str
    roc_auc: float
    average_precision: float
    f1: float
    fpr: float
    tpr: float
    threshold: float
    mean_score_normal: float
    mean_score_anomalous: float
    mean_mse_normal: float
    mean_mse_anomalous: float
    n_normal: int
    n_anomalous: int
    part_roc_auc: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, m: dict[str, Any]) -> DetectionMetrics:
        """From :meth:`ReconstructionDetector.evaluate`'s output."""
        names = {f.name for f in dataclasses.fields(cls)} - {"part_roc_auc"}
        parts = {k[len("roc_auc_") :]: float(v) for k, v in m.items() if k.startswith("roc_auc_")}
        return cls(**{k: m[k] for k in names}, part_roc_auc=parts)


@dataclass(frozen=True)
class AnomalyEvalResult(Record):
    """Metrics and figures of :func:`run_anomaly_eval` (figure name -> PNG file)."""

    metrics: DetectionMetrics
    figures: dict[str, Path]
    normal: str
    anomalous: str


def _anomaly_sets(normal: DataArg, anomalous: DataArg, normal_class: Any, anomalous_class: Any,
                  shape: tuple[int, int, int]) -> tuple[ImageDataset, ImageDataset, str]:  # fmt: skip
    """The normal and the anomalous images at the detector's shape, and what the anomalies are."""
    from aelab.data import parse_class_list

    n_src = load_images(normal, shape=shape)
    same = anomalous is normal or (
        not isinstance(normal, ImageDataset) and str(anomalous) == str(normal)
    )
    a_src = n_src if same else load_images(anomalous, shape=shape)
    n_ds, rest = (
        split_by_class(n_src, [normal_class]) if normal_class is not None else (n_src, None)
    )
    if anomalous_class is not None:
        a_ds, _ = split_by_class(a_src, parse_class_list(str(anomalous_class)))
        return n_ds, a_ds, f"class {anomalous_class}"
    if same and rest is not None:
        return n_ds, rest, "the other classes"  # one labelled source: the rest are the anomalies
    if same:
        raise ValueError(
            "--normal and --anomalous are the same data; give --normal-class or --anomalous-class"
        )
    return n_ds, a_src, "the anomalous set"


def run_anomaly_eval(
    detector: PathLike,
    normal: DataArg,
    anomalous: DataArg,
    out: PathLike,
    *,
    normal_class: str | int | None = None,
    anomalous_class: str | None = None,
    max_images: int = 0,
    seed: int = 0,
    device: str = "auto",
    overwrite: bool = False,
) -> AnomalyEvalResult:
    """Evaluate a saved detector on normal and anomalous images; write metrics and figures to ``out``.

    With ``normal_class`` the normal images are that class of ``normal``; the
    anomalous ones are ``anomalous_class`` (comma-separated) of ``anomalous``,
    or by default every other class. Writes ``metrics.json``, ``roc.png``,
    ``histogram.png``, ``most_anomalous.png`` and ``least_anomalous.png``.
    """
    from aelab.files import write_json
    from aelab.tasks.figures import anomaly_figures

    names = (
        "metrics.json",
        "roc.png",
        "histogram.png",
        "most_anomalous.png",
        "least_anomalous.png",
    )
    with output_folder(out, "anomaly eval", names=names, inputs=[detector, normal, anomalous],
                       overwrite=overwrite) as out:  # fmt: skip
        det = ReconstructionDetector.load(detector, device=device)
        n_ds, a_ds, what = _anomaly_sets(
            normal, anomalous, normal_class, anomalous_class, det.image_shape_
        )
        n_ds, a_ds = subsample(n_ds, max_images, seed), subsample(a_ds, max_images, seed + 1)
        m, s_n, s_a = det.evaluate(n_ds, a_ds, return_scores=True)
        metrics = DetectionMetrics.of(m)
        figures = anomaly_figures(det, n_ds, a_ds, (s_n, s_a), out)
        write_json(out / "metrics.json", metrics.to_json())
    label = str(normal_class) if normal_class is not None else "the normal set"
    return AnomalyEvalResult(metrics=metrics, figures=figures, normal=label, anomalous=what)
