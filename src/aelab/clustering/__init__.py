"""Clustering of feature vectors: Equilibrium K-Means and its command's work functions."""

from aelab.clustering._ekm import EquilibriumKMeans, MiniBatchEquilibriumKMeans
from aelab.clustering.datasets import make_imbalanced_blobs, make_paper_data
from aelab.clustering.run import ClusterResult, load_features, run_cluster
from aelab.clustering.sweep import alpha_sweep, parse_alpha_list, ratio_mismatch, search_alpha

__all__ = [
    "ClusterResult",
    "load_features",
    "run_cluster",
    "alpha_sweep",
    "parse_alpha_list",
    "ratio_mismatch",
    "search_alpha",
    "EquilibriumKMeans",
    "MiniBatchEquilibriumKMeans",
    "make_imbalanced_blobs",
    "make_paper_data",
]
