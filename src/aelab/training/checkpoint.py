"""Checkpoints as safetensors + JSON: never pickle, every checkpoint written as one unit.

A run folder holds

- ``model.safetensors``      weights (and buffers) after the latest finished epoch
- ``best.safetensors``       weights at the best epoch of the monitored metric
- ``model.json``             how to rebuild the model: registry name, config,
                             class names, image shape
- ``optimizer.safetensors``  optimizer tensors (AdamW moments, step counts)
- ``trainer_state.json``     epoch, history, early-stopping state, scheduler
                             state, optimizer hyper-parameters, RNG states
- ``config.json``            the run's training configuration
- ``metrics.csv``            one row per epoch

The files an epoch writes replace those of the epoch before as one unit (see
:mod:`aelab.training.commit`): a process killed at any moment of a save leaves
the folder at the last complete epoch, which :func:`load_model` loads and a
resumed run continues from. Every ``.safetensors`` file also carries the epoch
it belongs to in its metadata, which resuming checks.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aelab.files import atomic_path, read_json, write_json, write_text
from aelab.training.commit import committed_file, staged_unit

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_model",
    "load_weights",
    "read_checkpoint_meta",
    "save_checkpoint",
    "save_weights",
]

#: Written into ``model.json`` so that a foreign JSON file is not taken for ours.
CHECKPOINT_FORMAT = "aelab.checkpoint/1"

MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
MODEL_META_FILE = "model.json"
OPTIMIZER_FILE = "optimizer.safetensors"
#: With weight averaging (EMA) the model files hold the averaged weights, which
#: are the ones to predict with; the raw weights a resumed run continues from
#: go here.
TRAIN_WEIGHTS_FILE = "train_weights.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.csv"
#: Every file a training run keeps in its folder (what a new run there replaces).
RUN_FILES = (
    MODEL_FILE,
    BEST_FILE,
    MODEL_META_FILE,
    OPTIMIZER_FILE,
    TRAIN_WEIGHTS_FILE,
    STATE_FILE,
    CONFIG_FILE,
    METRICS_FILE,
)


# ----------------------------------------------------------------------------- weights


def save_weights(
    path: str | Path, tensors: Mapping[str, torch.Tensor], *, metadata: dict[str, str] | None = None
) -> Path:
    """Write named tensors to a safetensors file atomically (copied to CPU, made contiguous)."""
    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=metadata)
    return Path(path)


def load_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file: ``(tensors on CPU, metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from None


def _model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict())


def _load_into(model: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Copy ``tensors`` into ``model``, refusing any missing, extra or mis-shaped entry."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    shapes = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(tensors))
        if tensors[k].shape != own[k].shape
    ]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} unexpected tensors (e.g. {', '.join(extra[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        raise ValueError(
            f"{source}: the weights do not fit the model built from model.json: "
            + "; ".join(parts)
            + ". The checkpoint was written for a different architecture; "
            "rebuild the model with the config stored in model.json."
        )
    for k in own:  # in the model's order, so the message names the first layer at fault
        t = tensors[k]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(
                f"{source}: tensor {k!r} holds {bad} NaN or infinite value(s) of {t.numel()}; "
                "a model with non-finite weights predicts nonsense, so it is not loaded: "
                "train it again or use an earlier copy of the checkpoint"
            )
    model.load_state_dict(tensors, strict=True)


def _check_class_names(meta: dict[str, Any], model: nn.Module, meta_path: Path) -> None:
    """Refuse ``class_names`` that are not one name per output of a fine-tuned head.

    Only a fine-tuned checkpoint's head was trained on its class names; a
    pre-trained one records the names of its data beside an untrained head.
    """
    names = meta.get("class_names")
    if names is None:
        return
    if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
        raise ValueError(f"{meta_path}: class_names must be a list of strings or null")
    k = getattr(getattr(model, "config", None), "num_classes", None)
    if meta.get("task") == "finetune" and k is not None and len(names) != k:
        raise ValueError(
            f"{meta_path}: class_names lists {len(names)} names but the classifier has {k} "
            "outputs; give one name per class in the order it was trained on "
            "(or class_names null to predict class numbers)"
        )


# ----------------------------------------------------------------------------- optimizer


def _optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into tensors (safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()})
    return tensors, {"param_groups": groups, "scalars": scalars}


def _optimizer_from_files(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], info: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = value
    for pid, extra in info.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    groups = []
    for g in info["param_groups"]:
        # JSON turned tuples such as AdamW's betas into lists; give them back as tuples.
        groups.append({k: (tuple(v) if k == "betas" else v) for k, v in g.items()})
    if len(groups) != len(optimizer.param_groups) or any(
        len(a["params"]) != len(b["params"])
        for a, b in zip(groups, optimizer.param_groups, strict=True)
    ):
        raise ValueError(
            "the saved optimizer state has a different parameter layout than this run's "
            "optimizer; resume with the same model and settings that started the run"
        )
    optimizer.load_state_dict({"state": state, "param_groups": groups})


# ----------------------------------------------------------------------------- RNG states


def _b64(t: torch.Tensor | np.ndarray) -> str:
    arr = t.numpy() if isinstance(t, torch.Tensor) else t
    return base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode("ascii")


def _unb64(s: str, dtype: np.dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype=dtype).copy()


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states as JSON-able data."""
    py_version, py_state, py_gauss = random.getstate()
    # The legacy global state is what seed_everything seeds and augmentations may use.
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {
            "version": py_version,
            "state": _b64(np.asarray(py_state, dtype=np.uint64)),
            "gauss_next": py_gauss,
        },
        "numpy": {
            "name": np_name,
            "keys": _b64(np.asarray(np_keys, dtype=np.uint32)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    py = state["python"]
    py_state = tuple(int(v) for v in _unb64(py["state"], np.dtype(np.uint64)))
    random.setstate((py["version"], py_state, py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (
            npy["name"],
            _unb64(npy["keys"], np.dtype(np.uint32)),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    torch.set_rng_state(torch.from_numpy(_unb64(state["torch"], np.dtype(np.uint8))))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [torch.from_numpy(_unb64(s, np.dtype(np.uint8))) for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# ----------------------------------------------------------------------------- save / load


def _model_meta(
    model: nn.Module, model_name: str, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    meta: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model": model_name,
        "config": cfg.to_dict() if hasattr(cfg, "to_dict") else {},
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    meta.update(extra or {})
    return meta


def save_checkpoint(
    run_dir: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_meta: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    state: Mapping[str, Any] | None = None,
    best: bool = False,
    ema: nn.Module | None = None,
    extra_files: Mapping[str, Any] | None = None,
    new_run: bool = False,
) -> Path:
    """Write a checkpoint of ``model`` (and optionally the training state) into ``run_dir``.

    The files replace those already in ``run_dir`` as one unit: a process
    killed while saving leaves the previous checkpoint whole (the next save,
    :func:`load_model` and a resumed run all find it).

    Parameters
    ----------
    run_dir : str or Path
        Run folder; created if needed. Nothing is written outside it.
    model : torch.nn.Module
        The model; its ``config.to_dict()`` (when present) goes into ``model.json``.
    model_name : str
        Registry name that rebuilds the model (``aelab.models.create_model``).
    model_meta : mapping, optional
        Extra JSON-able entries for ``model.json`` (class names, image shape...).
    optimizer : torch.optim.Optimizer, optional
        Saved to ``optimizer.safetensors`` (tensors) and ``trainer_state.json``.
    scheduler : LR scheduler, optional
        Its ``state_dict()`` (JSON-able for ``LambdaLR``) goes into ``trainer_state.json``.
    state : mapping, optional
        Training state (epoch, history, ...). When given, ``trainer_state.json``
        is written, together with the current RNG states.
    best : bool
        Also copy the weights to ``best.safetensors``.
    ema : torch.nn.Module, optional
        The weight average of ``model`` (same architecture). Its weights go
        into ``model.safetensors`` and ``best.safetensors``, and those of
        ``model`` into ``train_weights.safetensors`` (with ``state`` only), so
        that a resumed run continues from them.
    extra_files : mapping of str to str or JSON-able, optional
        More files of the same checkpoint, written in the same unit: file name
        to its text (``str``) or to data written as JSON, such as
        ``metrics.csv`` and ``config.json``.
    new_run : bool
        The checkpoint starts a new run in ``run_dir``: the files of an earlier
        run there (see :data:`RUN_FILES`) that this one does not write are
        removed in the same unit.

    Returns
    -------
    Path
        ``run_dir``.
    """
    run_dir = Path(run_dir)
    if not model_name:
        raise ValueError("model_name must name a registered model, e.g. 'convae'")
    with staged_unit(run_dir, clear=RUN_FILES if new_run else ()) as unit:
        full = _write_checkpoint(
            unit.path, model, model_name, model_meta, optimizer, scheduler, state, best, ema
        )
        for name, content in (extra_files or {}).items():
            if isinstance(content, str):
                write_text(unit.path(name), content)
            else:
                write_json(unit.path(name), content)
        if full is not None:
            # Last, so it is moved into place last: a reader of the bare files
            # (during the moves) never sees a state ahead of its weights.
            write_json(unit.path(STATE_FILE), full)
    return run_dir


def _write_checkpoint(
    path: Callable[[str], Path],
    model: nn.Module,
    model_name: str,
    model_meta: Mapping[str, Any] | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    state: Mapping[str, Any] | None,
    best: bool,
    ema: nn.Module | None,
) -> dict[str, Any] | None:
    """Write the weights where ``path(name)`` says; return the trainer state to write."""
    epoch = str((state or {}).get("epoch", 0))
    weights = _model_tensors(model if ema is None else ema)
    tag = {"format": CHECKPOINT_FORMAT, "epoch": epoch}
    if best:
        save_weights(path(BEST_FILE), weights, metadata=tag)
    save_weights(path(MODEL_FILE), weights, metadata=tag)
    write_json(path(MODEL_META_FILE), _model_meta(model, model_name, model_meta))
    if state is None:
        return None
    full = dict(state)
    if ema is not None:
        save_weights(path(TRAIN_WEIGHTS_FILE), _model_tensors(model), metadata=tag)
    if optimizer is not None:
        tensors, info = _optimizer_to_files(optimizer)
        save_weights(path(OPTIMIZER_FILE), tensors, metadata=tag)
        full["optimizer"] = info
    if scheduler is not None:
        # LambdaLR keeps ``None`` for plain-function lambdas, so its state is JSON-able.
        full["scheduler"] = scheduler.state_dict()
    full["rng"] = get_rng_state()
    return full


def read_checkpoint_meta(run_dir: str | Path) -> dict[str, Any]:
    """Check that ``run_dir`` is a checkpoint and return its ``model.json``.

    Raises
    ------
    ValueError
        When the folder does not exist, or is missing a checkpoint file, or its
        ``model.json`` is not ours; the message names what is missing.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(
            f"{run_dir}: not a directory; give the run folder of a pretrain or finetune run"
        )
    missing = [n for n in (MODEL_META_FILE, MODEL_FILE) if committed_file(run_dir, n) is None]
    if missing:
        raise ValueError(
            f"{run_dir}: not an aelab checkpoint, missing {' and '.join(missing)}; "
            "give the run folder written by `aelab pretrain` or `aelab finetune`"
        )
    meta_path = committed_file(run_dir, MODEL_META_FILE)
    assert meta_path is not None
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{run_dir / MODEL_META_FILE}: not an aelab checkpoint description "
            f"(expected format {CHECKPOINT_FORMAT!r})"
        )
    for key in ("model", "config"):
        if key not in meta:
            raise ValueError(f"{run_dir / MODEL_META_FILE}: missing the {key!r} entry")
    return meta


def _checkpoint_file(run_dir: Path, name: str) -> Path:
    """The committed file ``name`` of a checkpoint (see :func:`committed_file`)."""
    path = committed_file(run_dir, name)
    if path is None:
        raise ValueError(f"{run_dir}: missing {name}")
    return path


def load_model(
    run_dir: str | Path, *, device: str | torch.device = "cpu", which: str = "best"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a run folder and load its weights.

    Parameters
    ----------
    run_dir : str or Path
        A folder written by :func:`save_checkpoint` (any pretrain/finetune run).
    device : str or torch.device
        Where to put the model (``"auto"`` picks CUDA when available).
    which : {"best", "last"}
        ``"best"`` loads ``best.safetensors`` when the run kept one (a
        validation metric was monitored), else the last weights.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on ``device``.
    meta : dict
        The contents of ``model.json`` plus ``"weights"`` (the file loaded).
    """
    from aelab.models import create_model
    from aelab.runtime import resolve_device

    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    run_dir = Path(run_dir)
    meta = read_checkpoint_meta(run_dir)
    dev = resolve_device(device)
    try:
        model = create_model(meta["model"], **meta["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"{run_dir / MODEL_META_FILE}: its config does not fit model {meta['model']!r} ({e})"
        ) from None
    best = committed_file(run_dir, BEST_FILE) if which == "best" else None
    path = best or _checkpoint_file(run_dir, MODEL_FILE)
    _check_class_names(meta, model, run_dir / MODEL_META_FILE)
    tensors, _ = load_weights(path)
    _load_into(model, tensors, path)
    model.to(dev).eval()
    return model, {**meta, "weights": path.name}


def load_training_state(
    run_dir: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    ema: nn.Module | None = None,
) -> dict[str, Any]:
    """Load the last weights, optimizer, scheduler and RNG states of an interrupted run.

    With ``ema`` (a run that averaged weights, see :func:`save_checkpoint`),
    the averaged weights go into ``ema`` and the raw ones into ``model``.
    Returns the saved training state (epoch, history, ...). Raises ``ValueError``
    when the files are missing or belong to different epochs.
    """
    run_dir = Path(run_dir)
    read_checkpoint_meta(run_dir)
    state_path = committed_file(run_dir, STATE_FILE)
    if state_path is None:
        raise ValueError(f"{run_dir}: missing {STATE_FILE}, so there is no training run to resume")
    state = read_json(state_path)
    names = [MODEL_FILE]
    if ema is not None:
        if committed_file(run_dir, TRAIN_WEIGHTS_FILE) is None:
            raise ValueError(
                f"{run_dir}: missing {TRAIN_WEIGHTS_FILE}; this run did not average "
                "weights, so resume it without ema_decay"
            )
        names.append(TRAIN_WEIGHTS_FILE)
    if optimizer is not None and "optimizer" in state:
        names.append(OPTIMIZER_FILE)
    files = {n: load_weights(_checkpoint_file(run_dir, n)) for n in names}
    epoch = str(state.get("epoch"))
    stale = {n: tag.get("epoch") for n, (_, tag) in files.items() if tag.get("epoch") != epoch}
    if stale:
        raise ValueError(
            f"{run_dir}: {STATE_FILE} is at epoch {epoch} but "
            + ", ".join(f"{k} is at epoch {v}" for k, v in stale.items())
            + "; its files come from different saves (mixed by hand?). Start the run again "
            "with overwrite (--overwrite) or in a new output folder."
        )
    dev = next(iter(model.state_dict().values())).device
    targets = {MODEL_FILE: model} if ema is None else {MODEL_FILE: ema, TRAIN_WEIGHTS_FILE: model}
    for name, module in targets.items():
        tensors = {k: v.to(dev) for k, v in files[name][0].items()}
        _load_into(module, tensors, run_dir / name)
    if OPTIMIZER_FILE in files:
        assert optimizer is not None
        # CPU tensors on purpose: load_state_dict moves moments to each parameter's
        # device but keeps a non-fused AdamW's step counters on the CPU, as it wants them.
        _optimizer_from_files(optimizer, files[OPTIMIZER_FILE][0], state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:
        set_rng_state(state["rng"])
    return state
