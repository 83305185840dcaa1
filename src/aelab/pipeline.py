"""Deprecated: the workflow functions moved to :mod:`aelab.tasks` (kept for one release).

The ``run_*`` names are the same; they now take a config dataclass or named
overrides of it and return typed result records instead of dicts.
"""

from __future__ import annotations

import warnings

from aelab.tasks import (  # noqa: F401  (re-exported)
    run_anomaly_eval,
    run_anomaly_fit,
    run_anomaly_score,
    run_cluster,
    run_deepcluster,
    run_embed,
    run_evaluate,
    run_finetune,
    run_predict,
    run_pretrain,
    run_reconstruct,
    write_latents,
)
from aelab.tasks.source import sample_subset, split_by_class  # noqa: F401

warnings.warn(
    "aelab.pipeline is deprecated and will be removed; import from aelab.tasks",
    DeprecationWarning,
    stacklevel=2,
)
