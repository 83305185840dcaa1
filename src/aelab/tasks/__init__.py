"""The tasks a user runs: a config in, files written, a typed result record out.

The command line and the study both call these functions and nothing else
does their work. Each takes its settings as one config dataclass or as named
overrides checked against its fields (:func:`~aelab.tasks.options.with_overrides`),
and returns a frozen :class:`~aelab.tasks.results.Record` with ``to_json()``
and ``from_json()``.

- learning: :func:`run_pretrain`, :func:`run_finetune` (:mod:`aelab.tasks.learn`)
- a trained checkpoint on new images: :func:`run_predict`, :func:`run_evaluate`,
  :func:`run_reconstruct` (:mod:`aelab.tasks.infer`)
- latents: :func:`run_embed`, :func:`run_cluster`, :func:`run_deepcluster`
- anomalies: :func:`run_anomaly_fit`, :func:`run_anomaly_score`, :func:`run_anomaly_eval`
"""

from aelab.tasks.anomaly import (
    AnomalyEvalResult,
    AnomalyFitOptions,
    AnomalyFitResult,
    AnomalyScoreResult,
    DetectionMetrics,
    run_anomaly_eval,
    run_anomaly_fit,
    run_anomaly_score,
)
from aelab.tasks.cluster import AlphaRow, ClusterOptions, ClusterResult, Scores, run_cluster
from aelab.tasks.deepcluster import DeepClusterOptions, DeepClusterRun, run_deepcluster
from aelab.tasks.embed import EmbedOptions, EmbedResult, run_embed, write_latents
from aelab.tasks.features import Latents, load_features, load_latents
from aelab.tasks.infer import (
    EvaluateResult,
    PredictResult,
    ReconstructResult,
    run_evaluate,
    run_predict,
    run_reconstruct,
)
from aelab.tasks.learn import (
    FinetuneOptions,
    FinetuneResult,
    PretrainOptions,
    PretrainResult,
    SplitSizes,
    finetune_options,
    run_finetune,
    run_pretrain,
)
from aelab.tasks.options import parse_assignments, with_overrides
from aelab.tasks.results import Record
from aelab.tasks.source import DataArg, Source

__all__ = [
    "AlphaRow",
    "AnomalyEvalResult",
    "AnomalyFitOptions",
    "AnomalyFitResult",
    "AnomalyScoreResult",
    "ClusterOptions",
    "ClusterResult",
    "DataArg",
    "DeepClusterOptions",
    "DeepClusterRun",
    "DetectionMetrics",
    "EmbedOptions",
    "EmbedResult",
    "EvaluateResult",
    "FinetuneOptions",
    "FinetuneResult",
    "Latents",
    "PredictResult",
    "PretrainOptions",
    "PretrainResult",
    "ReconstructResult",
    "Record",
    "Scores",
    "Source",
    "SplitSizes",
    "finetune_options",
    "load_features",
    "load_latents",
    "parse_assignments",
    "run_anomaly_eval",
    "run_anomaly_fit",
    "run_anomaly_score",
    "run_cluster",
    "run_deepcluster",
    "run_embed",
    "run_evaluate",
    "run_finetune",
    "run_predict",
    "run_pretrain",
    "run_reconstruct",
    "with_overrides",
    "write_latents",
]
