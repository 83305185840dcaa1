"""Clustering of feature vectors: Equilibrium K-Means, its alpha, sweeps and synthetic sets.

Stands alone: imports no other aelab package (the ``aelab cluster`` task that
reads files, plots and talks to Dask lives in :mod:`aelab.tasks.cluster`).

Importing this package is cheap (numpy only). The estimators subclass
scikit-learn's ``BaseEstimator``, whose import takes about a second (scikit-learn
loads SciPy's statistics), so they load on first access:
``from aelab.clustering import EquilibriumKMeans`` works as usual and pays that
import then, not ``import aelab.clustering``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aelab.clustering.alpha import (
    Alpha,
    AlphaMultiple,
    as_feature_matrix,
    auto_alpha,
    parse_alpha,
    resolve_alpha,
)
from aelab.clustering.datasets import make_imbalanced_blobs, make_paper_data
from aelab.clustering.sweep import alpha_sweep, ratio_mismatch, search_alpha

if TYPE_CHECKING:
    from aelab.clustering._ekm import EquilibriumKMeans, MiniBatchEquilibriumKMeans

#: Names loaded on first access, and the module that defines each.
_LAZY = {
    "EquilibriumKMeans": "aelab.clustering._ekm",
    "MiniBatchEquilibriumKMeans": "aelab.clustering._ekm_minibatch",
}

__all__ = [
    "Alpha",
    "AlphaMultiple",
    "EquilibriumKMeans",
    "MiniBatchEquilibriumKMeans",
    "alpha_sweep",
    "as_feature_matrix",
    "auto_alpha",
    "make_imbalanced_blobs",
    "make_paper_data",
    "parse_alpha",
    "ratio_mismatch",
    "resolve_alpha",
    "search_alpha",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later accesses skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
