"""What both estimators do with images and weights: read ``X``, pickle and save a model.

Images are read by the same rules as a ``.npy`` file on the command line
(:func:`aelab.data.from_array`) and brought to the model's shape as the CLI's
inference commands bring them (:func:`aelab.tasks.source.load_images`). A
model is pickled as its registry name, its config and its weights in
safetensors bytes (never as a pickled ``torch.nn.Module``), and saved as a
checkpoint folder (:func:`aelab.training.save_checkpoint`) beside a JSON file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

#: The batch size of inference (that of ``aelab predict`` and ``aelab embed``).
INFER_BATCH = 256
#: The estimator file of a saved estimator folder (written last: it marks a complete folder).
ESTIMATOR_FILE = "estimator.json"
MODEL_DIR = "model"


def as_images(X: Any, what: str = "X") -> Any:
    """``X`` as an :class:`~aelab.data.ImageDataset` (uint8, channels first).

    ``X`` is an ImageDataset or an array of images of shape (n_samples, H, W)
    or (n_samples, H, W, C): uint8, or floats in [0, 1] (rounded to 1/255).
    """
    from aelab.data import ImageDataset, from_array

    if isinstance(X, ImageDataset):
        ds = X
    else:
        import torch

        # Contiguous (no copy when it already is): from_array shares memory with a
        # uint8 array, and torch takes no negative strides (``X[::-1]``).
        a = X if isinstance(X, torch.Tensor) else np.ascontiguousarray(X)
        if a.ndim not in (3, 4):
            raise ValueError(
                f"{what} must be images of shape (n_samples, height, width[, channels]), "
                f"got an array of shape {tuple(a.shape)}"
            )
        ds = from_array(a)
    if len(ds) == 0:
        raise ValueError(f"{what}: no images; give at least one")
    return ds


def at_shape(X: Any, shape: tuple[int, int, int], what: str = "X") -> Any:
    """``X`` as images at ``shape`` (channels, height, width): resized and converted as the CLI does."""
    from aelab.tasks.source import load_images

    return load_images(as_images(X, what), shape=tuple(shape), progress=False)


def as_channels_last(images: Any) -> np.ndarray:
    """Float images (N, C, H, W) in [0, 1] as (N, H, W) for one channel, else (N, H, W, C)."""
    a = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    a = np.moveaxis(a.astype(np.float32, copy=False), 1, -1)
    return a[..., 0] if a.shape[-1] == 1 else a


def model_state(model: Any, name: str) -> dict[str, Any]:
    """A model as picklable plain data: registry name, config, safetensors bytes."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return {"name": name, "config": model.config.to_dict(), "weights": save(tensors)}


def model_from_state(state: dict[str, Any]) -> Any:
    """The model :func:`model_state` described, in eval mode on the CPU."""
    from safetensors.torch import load

    from aelab.models import create_model

    model = create_model(state["name"], **state["config"])
    model.load_state_dict(load(state["weights"]), strict=True)
    return model.eval()


def decode(model: Any, Z: Any, device: str) -> np.ndarray:
    """Images decoded from latents ``Z`` (n_samples, latent_dim): float (N, C, H, W) in [0, 1]."""
    import torch

    from aelab.runtime import resolve_device

    z = np.asarray(Z, dtype=np.float32)
    dim = int(model.config.latent_dim)
    if z.ndim != 2 or z.shape[1] != dim:
        raise ValueError(
            f"Z must have shape (n_samples, {dim}) (the latents of transform), got {tuple(z.shape)}"
        )
    if not np.isfinite(z).all():
        raise ValueError("Z contains NaN or infinite values")
    dev = resolve_device(device)
    model.to(dev).eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(z), INFER_BATCH):
            batch = torch.from_numpy(z[i : i + INFER_BATCH]).to(dev)
            outs.append(model.decode(batch).float().clamp_(0, 1).cpu())
    if not outs:
        cfg = model.config
        return np.empty((0, cfg.in_channels, cfg.image_size, cfg.image_size), np.float32)
    return torch.cat(outs).numpy()


def temporary_run() -> tempfile.TemporaryDirectory[str]:
    """The folder a fit trains in: the task writes its run there, removed after ``fit``."""
    return tempfile.TemporaryDirectory(prefix="aelab-estimator-")


def write_model(directory: Path, model: Any, name: str, meta: dict[str, Any]) -> Path:
    """``model`` as a checkpoint folder the tasks read (``init=``, ``load_model``)."""
    from aelab.training import save_checkpoint

    return save_checkpoint(directory, model, model_name=name, model_meta=meta)


def save_folder(
    directory: str | Path, kind: str, model: Any, name: str, record: dict[str, Any]
) -> Path:
    """Write an estimator folder: the model checkpoint, then ``estimator.json`` (last)."""
    from aelab.files import leftover_temporaries, write_json

    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{d} is a file; give a folder to save the estimator in")
    for tmp in leftover_temporaries(d):  # an earlier save that a kill cut short
        tmp.unlink(missing_ok=True)
    write_model(d / MODEL_DIR, model, name, {"task": kind})
    write_json(d / ESTIMATOR_FILE, {"kind": kind, "format": 1, **record})
    return d


def load_folder(directory: str | Path, kind: str) -> tuple[dict[str, Any], Any]:
    """``(estimator.json, model)`` of a folder written by :func:`save_folder`.

    Raises
    ------
    ValueError
        When ``directory`` holds no saved estimator of this kind.
    """
    from aelab.files import read_json
    from aelab.training import load_model

    d = Path(directory)
    path = d / ESTIMATOR_FILE
    if not path.is_file():
        raise ValueError(f"{d} holds no saved estimator ({ESTIMATOR_FILE} is missing)")
    record = read_json(path)
    if not isinstance(record, dict) or record.get("kind") != kind:
        found = record.get("kind") if isinstance(record, dict) else None
        raise ValueError(f"{path} describes a {found!r}, not a {kind!r}; load it with that class")
    model, _ = load_model(d / MODEL_DIR, device="cpu", which="last")
    return record, model


class PicklesModel:
    """Pickle ``model_`` as plain data (:func:`model_state`), for joblib and ``copy.deepcopy``.

    Torch weights travel as safetensors bytes with the registry name and
    config that rebuild the model, on the CPU whatever device it was on; no
    ``torch.nn.Module`` is pickled. Mixed in before :class:`sklearn.base.BaseEstimator`.
    """

    def __getstate__(self) -> dict[str, Any]:
        # A copy: object.__getstate__ hands back the instance's own __dict__.
        state = dict(super().__getstate__())  # type: ignore[misc]
        if state.get("model_") is not None:
            state["model_"] = model_state(state["model_"], state["model_name_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("model_"), dict):
            state = {**state, "model_": model_from_state(state["model_"])}
        super().__setstate__(state)  # type: ignore[misc]


def image_tags(tags: Any) -> Any:
    """scikit-learn tags of an estimator of images: arrays of 3 or 4 axes, never a 2-D table."""
    tags.input_tags.two_d_array = False
    tags.input_tags.three_d_array = True
    return tags
