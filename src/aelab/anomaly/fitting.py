"""Training a detector's autoencoder on normal images, and holding some out to calibrate.

The functions trust their arguments: :meth:`ReconstructionDetector.fit
<aelab.anomaly.ReconstructionDetector.fit>` has validated the settings, which
arrive as its parameters (``params``, :meth:`get_params`'s dict), so nothing
here declares a setting a second time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aelab.anomaly.inputs import anomaly_model_spec
from aelab.anomaly.selfsup import TRANSFORM_SETS, transform_reconstruction_step
from aelab.data.dataset import ImageDataset


def build_model(
    params: Mapping[str, Any], parts: tuple[str, ...], image_shape: tuple[int, int, int]
) -> tuple[torch.nn.Module, str]:
    """The untrained autoencoder of a detector with ``params`` and score ``parts``, and its name.

    ``image_shape`` is (C, H, W) of the normal images; ``model="auto"`` picks
    the model that suits it (:func:`anomaly_model_spec`).
    """
    from aelab.models import create_model
    from aelab.runtime import seed_everything

    if params["model"] == "auto":
        name, overrides = anomaly_model_spec(*image_shape)
    else:
        name, overrides = params["model"], {}
    # The head is used only by the transform score; otherwise it is a stub of one output.
    n_out = len(TRANSFORM_SETS[params["transforms"]]) if "transform" in parts else 1
    overrides = {**overrides, **(params["model_overrides"] or {}), "num_classes": n_out}
    seed_everything(params["random_state"])
    return create_model(name, **overrides), name


def split_calibration(n: int, n_calibration: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted row indices of the training and the held-out calibration images (a seeded draw)."""
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_calibration:]), np.sort(perm[:n_calibration])


def train_model(
    net: torch.nn.Module,
    name: str,
    params: Mapping[str, Any],
    parts: tuple[str, ...],
    data: tuple[ImageDataset, ImageDataset],
    out_dir: str | Path | None,
    restart: tuple[bool, bool] = (False, False),
) -> tuple[Any, int]:
    """Train ``net`` in place on ``data`` = (train, calib); its ``TrainResult`` and epochs trained.

    The epochs are ``params["epochs"]``, or more when that would make fewer
    than ``params["min_steps"]`` optimizer steps. ``restart`` is (resume, overwrite).
    """
    from aelab.training import PretrainConfig, pretrain

    train, calib = data
    bs = min(params["batch_size"], len(train))
    # Batches are full (the ragged one is dropped), so an epoch is n // bs steps.
    epochs = max(params["epochs"], math.ceil(params["min_steps"] / max(1, len(train) // bs)))
    config = PretrainConfig(
        epochs=epochs, batch_size=bs, lr=params["lr"], loss=params["loss"],
        seed=params["random_state"], device=params["device"], progress=params["verbose"],
    )  # fmt: skip
    resume, overwrite = restart
    if "transform" not in parts:
        result = pretrain(net, train, val=calib, config=config, out_dir=out_dir, model_name=name,
                          resume=resume, overwrite=overwrite)  # fmt: skip
        return result, epochs
    return _train_with_transforms(net, name, params, data, config, out_dir, restart), epochs


def _train_with_transforms(
    net: torch.nn.Module,
    name: str,
    params: Mapping[str, Any],
    data: tuple[ImageDataset, ImageDataset],
    config: Any,
    out_dir: str | Path | None,
    restart: tuple[bool, bool],
) -> Any:
    from aelab.runtime import resolve_device
    from aelab.training import Trainer, batch_factory

    train, calib = data
    if train.image_shape[1] != train.image_shape[2]:
        raise ValueError("the transform score needs square images; use a square model")
    bs = config.batch_size
    # The recipes' batches: under torchrun each rank takes its share of every global batch.
    kw = {"batch_size": bs, "seed": params["random_state"], "labels": False,
          "device": resolve_device(config.device)}  # fmt: skip
    step = transform_reconstruction_step(
        TRANSFORM_SETS[params["transforms"]], weight=params["transform_weight"],
        loss=params["loss"],
    )  # fmt: skip
    trainer = Trainer(
        net,
        step,
        batch_factory(train, shuffle=True, **kw),
        config=config,
        val_batches=batch_factory(calib, shuffle=False, **kw),
        run_dir=out_dir,
        model_name=name,
        model_meta={"task": "anomaly-transform", "image_shape": list(train.image_shape)},
        run_config={"task": "anomaly-transform", "batch_size": bs, "loss": params["loss"],
                    "transforms": params["transforms"],
                    "transform_weight": params["transform_weight"]},
    )  # fmt: skip
    resume, overwrite = restart
    return trainer.fit(resume=resume, overwrite=overwrite)
