"""Choosing a model for the data, and loading a checkpoint for new data.

``model="auto"`` is resolved in one place (:func:`model_spec`, over
:func:`aelab.models.auto_model_spec`); a checkpoint is opened for new images in
one place (:func:`open_checkpoint`), which brings the images to the size and
channels the checkpoint was trained at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aelab.data.dataset import ImageDataset
from aelab.tasks.source import DataArg, describe, load_images

__all__ = [
    "Opened",
    "check_model_overrides",
    "model_spec",
    "new_model",
    "open_checkpoint",
    "record_run",
]

Shape = tuple[int, int, int]


def check_model_overrides(
    overrides: dict[str, Any] | None, where: str = "model_overrides"
) -> dict[str, Any] | None:
    """``overrides`` checked against the fields of :class:`~aelab.models.ConvAEConfig`.

    Every registered model is a member of the ``convae`` family, so its config
    is a ``ConvAEConfig``: an unknown key or a value of the wrong kind is a
    one-line ValueError naming the setting (``model_overrides.foo``); the
    ranges are checked when the model is built, with the image shape known.
    """
    from aelab.models import ConvAEConfig
    from aelab.tasks.options import coerce, field_types
    from aelab.training.configs import check_model_keys

    check_model_keys(overrides)  # the keys, as PretrainConfig checks them
    if overrides is None:
        return None
    types = field_types(ConvAEConfig)
    return {k: coerce(v, types[k], f"{where}.{k}") for k, v in overrides.items()}


def model_spec(
    shape: Shape, name: str = "auto", overrides: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The registered model name and config overrides for images of ``shape``.

    ``name="auto"`` picks the ``convae`` family member that suits the images
    (see :func:`aelab.models.auto_model_spec`); ``overrides`` change its config.
    """
    from aelab.models import auto_model_spec, list_models

    if name == "auto":
        name, auto = auto_model_spec(*shape)
    else:
        if name not in list_models():
            raise ValueError(
                f"unknown model {name!r}; choose auto or one of: {', '.join(list_models())}"
            )
        auto = {}
    return name, {**auto, **(overrides or {})}


def new_model(
    shape: Shape,
    name: str = "auto",
    *,
    num_classes: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Any, str]:
    """A fresh model for images of ``shape``; returns ``(model, registry name)``."""
    from aelab.models import create_model

    name, kw = model_spec(shape, name, overrides)
    if num_classes is not None:
        kw["num_classes"] = num_classes
    return create_model(name, **kw), name


def model_shape(model: Any) -> Shape:
    """(channels, height, width) of the images ``model`` takes."""
    cfg = model.config
    return (int(cfg.in_channels), int(cfg.image_size), int(cfg.image_size))


@dataclass
class Opened:
    """A checkpoint opened for new images.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode on the requested device.
    model_name : str
        Its registry name.
    class_names : list of str or None
        The classes it was fine-tuned on (``None`` when unknown).
    data : ImageDataset or None
        The images, brought to the model's size and channels.
    path : Path
        The checkpoint folder.
    """

    model: Any
    model_name: str
    class_names: list[str] | None
    data: ImageDataset | None
    path: Path


def open_checkpoint(
    ckpt: str | os.PathLike[str],
    data: DataArg | None = None,
    *,
    device: str = "auto",
    progress: bool = True,
) -> Opened:
    """Load checkpoint ``ckpt`` and, when given, ``data`` at the checkpoint's image shape."""
    from aelab.training import load_model

    model, meta = load_model(ckpt, device=device)
    images = None
    if data is not None:
        images = load_images(data, shape=model_shape(model), progress=progress)
    return Opened(
        model=model, model_name=meta["model"], class_names=meta.get("class_names"),
        data=images, path=Path(ckpt),
    )  # fmt: skip


def record_run(out_dir: str | os.PathLike[str], command: str, data: DataArg, options: Any) -> Path:
    """Record the command, data and options a run was made with (``run.json``; rank 0 only)."""
    from aelab import __version__
    from aelab.files import write_json
    from aelab.tasks.results import to_jsonable
    from aelab.training import distributed as dist_utils

    path = Path(out_dir) / "run.json"
    if not dist_utils.is_main():
        return path
    record = {"command": command, "aelab": __version__, "data": describe(data), "options": options}
    return write_json(path, to_jsonable(record))
