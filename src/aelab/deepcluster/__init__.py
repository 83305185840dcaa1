"""Deep clustering: fine-tune an autoencoder so that its latents cluster (EKM or K-means).

Sits above :mod:`aelab.training` and :mod:`aelab.clustering`, which it joins:

- :mod:`aelab.deepcluster.loss` — :func:`clustering_loss` and the training step
- :mod:`aelab.deepcluster.core` — :func:`deep_cluster`, :class:`DeepClusterConfig`
"""

from aelab.deepcluster.core import (
    DeepClusterConfig,
    DeepClusterResult,
    cluster_latents,
    deep_cluster,
)
from aelab.deepcluster.loss import METHODS, clustering_loss, deep_clustering_step

__all__ = [
    "METHODS",
    "DeepClusterConfig",
    "DeepClusterResult",
    "cluster_latents",
    "clustering_loss",
    "deep_cluster",
    "deep_clustering_step",
]
