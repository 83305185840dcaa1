"""Training: a model-agnostic loop, step functions, checkpoints, and recipes.

- :mod:`aelab.training.loop` — :class:`Trainer` and :class:`TrainConfig`
- :mod:`aelab.training.steps` — reconstruction and classification steps
- :mod:`aelab.training.semisup` — FixMatch step and strong augmentation
- :mod:`aelab.training.checkpoint` — safetensors + JSON checkpoints
- :mod:`aelab.training.recipes` — :func:`pretrain`, :func:`finetune`,
  :func:`predict`, :func:`evaluate`, :func:`encode`, :func:`iter_encode`, :func:`reconstruct`
- :mod:`aelab.training.deepcluster` — :func:`deep_cluster` (EKM or K-means
  clustering loss, alternating with re-clustering)
"""

from aelab.training.checkpoint import load_model, read_checkpoint_meta, save_checkpoint
from aelab.training.deepcluster import (
    DeepClusterResult,
    clustering_loss,
    deep_cluster,
    deep_clustering_step,
)
from aelab.training.loop import NonFiniteLossError, TrainConfig, Trainer, TrainResult
from aelab.training.recipes import (
    FINETUNE_RECIPES,
    FinetuneConfig,
    PretrainConfig,
    encode,
    evaluate,
    finetune,
    finetune_recipe,
    iter_encode,
    map_batches,
    predict,
    pretrain,
    reconstruct,
)
from aelab.training.semisup import Cutout, fixmatch_step, make_strong_augment
from aelab.training.steps import classification_step, reconstruction_loss, reconstruction_step

__all__ = [
    "FINETUNE_RECIPES",
    "Cutout",
    "DeepClusterResult",
    "FinetuneConfig",
    "NonFiniteLossError",
    "PretrainConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "classification_step",
    "clustering_loss",
    "deep_cluster",
    "deep_clustering_step",
    "encode",
    "evaluate",
    "finetune",
    "finetune_recipe",
    "fixmatch_step",
    "iter_encode",
    "load_model",
    "make_strong_augment",
    "map_batches",
    "predict",
    "pretrain",
    "read_checkpoint_meta",
    "reconstruct",
    "reconstruction_loss",
    "reconstruction_step",
    "save_checkpoint",
]
