"""Clustering of feature vectors: Equilibrium K-Means, its sweeps and metrics.

Stands alone: imports no other aelab package (the ``aelab cluster`` task that
reads files, plots and talks to Dask lives in :mod:`aelab.tasks.cluster`).
"""

from aelab.clustering._ekm import EquilibriumKMeans, MiniBatchEquilibriumKMeans
from aelab.clustering.datasets import make_imbalanced_blobs, make_paper_data
from aelab.clustering.sweep import alpha_sweep, parse_alpha_list, ratio_mismatch, search_alpha

__all__ = [
    "alpha_sweep",
    "parse_alpha_list",
    "ratio_mismatch",
    "search_alpha",
    "EquilibriumKMeans",
    "MiniBatchEquilibriumKMeans",
    "make_imbalanced_blobs",
    "make_paper_data",
]
