"""Training: a model-agnostic loop, step functions, checkpoints, and recipes.

- :mod:`aelab.training.loop` — :class:`Trainer` (with :mod:`~aelab.training.loop_config`:
  :class:`TrainConfig`; :mod:`~aelab.training.ema`: weight averaging;
  :mod:`~aelab.training.runfolder`: run-folder checks and metrics;
  :mod:`~aelab.training.epoch`: device moves, metric sums, DDP wrapping;
  :mod:`~aelab.training.optim`: AdamW and the warm-up + cosine schedule)
- :mod:`aelab.training.steps` — reconstruction and classification steps
- :mod:`aelab.training.semisup` — FixMatch step and strong augmentation
- :mod:`aelab.training.checkpoint` — safetensors + JSON checkpoints, each epoch's
  files committed as one unit (:mod:`~aelab.training.commit`)
- :mod:`aelab.training.configs` — :class:`PretrainConfig`, :class:`FinetuneConfig`
  (one settings class per task), the named fine-tuning recipes (``FinetuneConfig.recipe``)
- :mod:`aelab.training.batching` — :func:`batch_factory` (seeded, sharded batches)
- :mod:`aelab.training.recipes` — :func:`pretrain`, :func:`finetune`
- :mod:`aelab.training.inference` — :func:`predict`, :func:`evaluate`,
  :func:`encode`, :func:`iter_encode`, :func:`reconstruct`, :func:`map_batches`
"""

from aelab.training.batching import batch_factory, check_dataset
from aelab.training.checkpoint import load_model, read_checkpoint_meta, save_checkpoint
from aelab.training.configs import (
    FINETUNE_RECIPES,
    FinetuneConfig,
    PretrainConfig,
    finetune_recipe,
)
from aelab.training.inference import (
    encode,
    evaluate,
    iter_encode,
    map_batches,
    predict,
    reconstruct,
)
from aelab.training.loop import NonFiniteLossError, TrainConfig, Trainer, TrainResult
from aelab.training.recipes import finetune, pretrain
from aelab.training.semisup import Cutout, fixmatch_step, make_strong_augment
from aelab.training.steps import classification_step, reconstruction_loss, reconstruction_step

__all__ = [
    "FINETUNE_RECIPES",
    "Cutout",
    "FinetuneConfig",
    "NonFiniteLossError",
    "PretrainConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "batch_factory",
    "check_dataset",
    "classification_step",
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
