"""The steps users run, as importable functions: the CLI and the study both call these.

Each function takes plain values (data specs, paths, numbers), does one step of
the workflow end to end (load data at the model's size, build or load the
model, train or infer, write files) and returns what it produced.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aelab._io import write_json, write_npz, write_text
from aelab.data.dataset import ImageDataset


@dataclass
class ModelData:
    """A model (or the shape it wants) with a dataset conformed to it."""

    model: Any
    model_name: str
    data: ImageDataset
    meta: dict[str, Any]


def load_for_checkpoint(data: str | Path | ImageDataset, ckpt: str | Path, *, skip_bad: bool = False, device: str = "auto", labels: str | Path | None = None) -> ModelData:
    """Load a checkpoint and a dataset brought to its image size and channels.

    Parameters
    ----------
    data : data spec or ImageDataset
        A folder, ``.npy``/``.npz`` file, ``fashion-mnist[:split]``, or data in memory.
    ckpt : path
        A run folder written by :func:`pretrain` or :func:`finetune`.
    """
    from aelab.data import conform, load_dataset
    from aelab.training import load_model, read_checkpoint_meta

    meta = read_checkpoint_meta(ckpt)
    model, meta = load_model(ckpt, device=device)
    cfg = model.config
    if isinstance(data, ImageDataset):
        ds = conform(data, image_size=cfg.image_size, channels=cfg.in_channels)
    else:
        ds = load_dataset(data, labels=labels, image_size=cfg.image_size, channels=cfg.in_channels, skip_bad=skip_bad)
    return ModelData(model=model, model_name=meta["model"], data=ds, meta=meta)


def model_for_data(ds: ImageDataset, model: str = "auto", *, num_classes: int | None = None, **overrides: Any) -> ModelData:
    """Build a fresh model for ``ds`` and conform ``ds`` to it.

    ``model="auto"`` picks the ``convae`` family member that suits the images
    (see :func:`aelab.models.auto_model_spec`).
    """
    from aelab.data import conform
    from aelab.models import auto_model_spec, create_model

    if model == "auto":
        name, auto = auto_model_spec(*ds.image_shape)
    else:
        name, auto = model, {}
    kw = {**auto, **overrides}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    net = create_model(name, **kw)
    cfg = net.config
    ds = conform(ds, image_size=cfg.image_size, channels=cfg.in_channels)
    return ModelData(model=net, model_name=name, data=ds, meta={"model": name, "config": cfg.to_dict()})


def write_submission(path: str | Path, ids: list[str], labels: np.ndarray, class_names: list[str] | None) -> Path:
    """Write ``id,label`` rows in input order; labels as class names when known."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "label"])
    for i, k in zip(ids, labels.tolist(), strict=True):
        w.writerow([i, class_names[k] if class_names else k])
    return write_text(path, buf.getvalue())


def write_latents(path: str | Path, z: np.ndarray, ds: ImageDataset) -> Path:
    """Save latents with ids (and labels and class names when known) as ``.npz``.

    Keys: ``z`` (n_samples, latent_dim), ``ids``, and optionally ``labels``,
    ``class_names``. ``aelab cluster`` reads ``z`` by default.
    """
    arrays: dict[str, np.ndarray] = {"z": z.astype(np.float32), "ids": np.asarray(ds.ids, dtype=str)}
    if ds.labels is not None:
        arrays["labels"] = ds.labels.numpy()
    if ds.class_names is not None:
        arrays["class_names"] = np.asarray(ds.class_names, dtype=str)
    return write_npz(path, **arrays)


def save_run_config(out_dir: str | Path, command: str, options: dict[str, Any]) -> Path:
    """Record the command and options a run was made with (``run.json``)."""
    from aelab import __version__

    return write_json(Path(out_dir) / "run.json", {"command": command, "aelab": __version__, "options": options})


def _subsample(ds: ImageDataset, max_images: int, seed: int) -> ImageDataset:
    if max_images and len(ds) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(len(ds), size=max_images, replace=False))
        return ds.subset(idx)
    return ds


def _augment(preset: str) -> Any:
    from aelab.data import make_augment

    return None if preset == "none" else make_augment(preset)


def run_pretrain(
    data: str | Path | ImageDataset,
    out: str | Path,
    *,
    model: str = "auto",
    epochs: int = 10,
    batch_size: int = 128,
    lr: float = 2e-3,
    loss: str = "mse",
    augment: str = "none",
    val_fraction: float = 0.05,
    max_images: int = 0,
    amp: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    skip_bad: bool = False,
    progress: bool = True,
    model_overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pre-train an autoencoder on ``data`` (labels ignored) into ``out/pretrain``.

    Returns
    -------
    dict
        ``run_dir``, ``history`` (per-epoch metrics), ``train_loss``, ``val_loss``.
    """
    from aelab._runtime import seed_everything
    from aelab.data import load_dataset, split_dataset
    from aelab.training import PretrainConfig, pretrain

    ds = data if isinstance(data, ImageDataset) else load_dataset(data, skip_bad=skip_bad)
    ds = _subsample(ds, max_images, seed)
    seed_everything(seed)
    md = model_for_data(ds, model, **(model_overrides or {}))
    parts = split_dataset(md.data, val_fraction=val_fraction, seed=seed)
    config = PretrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, loss=loss, amp=amp, seed=seed,
        device=device, progress=progress,
    )  # fmt: skip
    run_dir = Path(out) / "pretrain"
    result = pretrain(
        md.model, parts.unlabeled, val=parts.val, config=config, out_dir=run_dir,
        augment=_augment(augment), resume=resume, overwrite=overwrite, model_name=md.model_name,
    )  # fmt: skip
    save_run_config(run_dir, "pretrain", {"data": str(data) if not isinstance(data, ImageDataset) else "<memory>",
                                          "model": md.model_name, "augment": augment, "max_images": max_images,
                                          "val_fraction": val_fraction, "config": vars(config)})  # fmt: skip
    last = result.history[-1] if result.history else {}
    return {
        "run_dir": str(run_dir),
        "history": result.history,
        "train_loss": float(last.get("train_loss", float("nan"))),
        "val_loss": last.get("val_loss"),
        "n_train": len(parts.unlabeled),
        "n_val": 0 if parts.val is None else len(parts.val),
    }


def run_finetune(
    data: str | Path | ImageDataset,
    out: str | Path,
    *,
    init: str | Path | None = None,
    model: str = "auto",
    name: str = "finetune",
    labels_per_class: int = 0,
    val_per_class: int = 0,
    val_fraction: float = 0.1,
    augment: str = "standard",
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    recon_weight: float = 0.0,
    freeze_encoder_epochs: int = 0,
    encoder_lr_mult: float = 0.1,
    label_smoothing: float = 0.1,
    patience: int | None = None,
    amp: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    seed: int = 0,
    device: str = "auto",
    skip_bad: bool = False,
    labels: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune a classifier on labeled ``data`` into ``out/name``, from ``init`` or from scratch.

    Returns
    -------
    dict
        ``run_dir``, ``history``, ``best_val_acc``, ``best_epoch``, split sizes.
    """
    from aelab._runtime import seed_everything
    from aelab.data import conform, load_dataset, split_dataset
    from aelab.training import FinetuneConfig, finetune, load_model

    ds = data if isinstance(data, ImageDataset) else load_dataset(data, labels=labels, skip_bad=skip_bad)
    if ds.labels is None:
        raise ValueError(
            "fine-tuning needs labels: give a folder with one subfolder per class, "
            "an .npz with a labels array, or --labels FILE"
        )
    seed_everything(seed)
    if init is not None:
        net, meta = load_model(init, device="cpu")
        model_name = meta["model"]
        cfg = net.config
        ds = conform(ds, image_size=cfg.image_size, channels=cfg.in_channels)
    else:
        md = model_for_data(ds, model, num_classes=ds.num_classes)
        net, model_name, ds = md.model, md.model_name, md.data
    parts = split_dataset(
        ds,
        labels_per_class=labels_per_class or None,
        val_per_class=val_per_class or None,
        val_fraction=val_fraction,
        seed=seed,
    )
    config = FinetuneConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, recon_weight=recon_weight,
        freeze_encoder_epochs=freeze_encoder_epochs, encoder_lr_mult=encoder_lr_mult,
        label_smoothing=label_smoothing, patience=patience, amp=amp, seed=seed, device=device,
        progress=progress,
    )  # fmt: skip
    run_dir = Path(out) / name
    result = finetune(
        net, parts.labeled, val=parts.val,
        unlabeled=parts.unlabeled if recon_weight > 0 else None,
        config=config, out_dir=run_dir, augment=_augment(augment), resume=resume,
        overwrite=overwrite, model_name=model_name,
    )  # fmt: skip
    save_run_config(run_dir, "finetune", {"data": str(data) if not isinstance(data, ImageDataset) else "<memory>",
                                          "init": None if init is None else str(init), "model": model_name,
                                          "augment": augment, "labels_per_class": labels_per_class,
                                          "val_per_class": val_per_class, "config": vars(config),
                                          "splits": parts.summary()})  # fmt: skip
    val_accs = [r["val_acc"] for r in result.history if "val_acc" in r]
    return {
        "run_dir": str(run_dir),
        "history": result.history,
        "best_val_acc": max(val_accs) if val_accs else None,
        "best_epoch": result.best_epoch,
        "splits": parts.summary(),
        "model": net,
    }


def run_predict(data: str | Path | ImageDataset, ckpt: str | Path, out: str | Path, *, batch_size: int = 256,
                device: str = "auto", skip_bad: bool = False) -> dict[str, Any]:  # fmt: skip
    """Predict every image of ``data`` with a fine-tuned checkpoint; write ``id,label`` to ``out``."""
    from aelab.training import predict

    md = load_for_checkpoint(data, ckpt, skip_bad=skip_bad, device=device)
    pred, probs = predict(md.model, md.data, batch_size=batch_size, device=device)
    names = md.meta.get("class_names")
    path = write_submission(out, md.data.ids, pred, names)
    return {"path": str(path), "n": len(pred), "labels": pred, "probs": probs}


def run_evaluate(data: str | Path | ImageDataset, ckpt: str | Path, *, out: str | Path | None = None,
                 labels: str | Path | None = None, device: str = "auto", skip_bad: bool = False) -> dict[str, Any]:  # fmt: skip
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on labeled ``data``."""
    from aelab.training import evaluate

    md = load_for_checkpoint(data, ckpt, skip_bad=skip_bad, device=device, labels=labels)
    if md.data.labels is None:
        raise ValueError("evaluation needs labeled data (class subfolders, labels in the .npz, or --labels)")
    res = evaluate(md.model, md.data, device=device)
    k = res["confusion_matrix"].shape[0]
    names = md.meta.get("class_names") or md.data.class_names or [str(i) for i in range(k)]
    res = {
        "accuracy": res["accuracy"],
        "n_samples": res["n_samples"],
        "class_names": list(names)[:k],
        "per_class_accuracy": [float(v) for v in res["per_class_accuracy"]],
        "confusion_matrix": res["confusion_matrix"].tolist(),
    }
    if out is not None:
        write_json(out, res)
    return res


def run_reconstruct(data: str | Path | ImageDataset, ckpts: list[str | Path] | str | Path, out: str | Path, *,
                    n: int = 16, seed: int = 0, device: str = "auto", skip_bad: bool = False,
                    titles: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """A PNG grid: ``n`` originals above their reconstructions by each checkpoint."""
    from aelab import viz
    from aelab.training import reconstruct

    ckpts = [ckpts] if isinstance(ckpts, str | Path) else list(ckpts)
    if not ckpts:
        raise ValueError("give at least one checkpoint")
    first = load_for_checkpoint(data, ckpts[0], skip_bad=skip_bad, device=device)
    idx = np.sort(np.random.default_rng(seed).choice(len(first.data), size=min(n, len(first.data)), replace=False))
    sample = first.data.subset(idx)
    rows, mses = [sample.images], []
    for i, ck in enumerate(ckpts):
        md = first if i == 0 else load_for_checkpoint(sample, ck, device=device)
        if md.data.image_shape != sample.image_shape:
            raise ValueError(f"{ck} expects images of shape {md.data.image_shape}, the first checkpoint {sample.image_shape}")
        r = reconstruct(md.model, sample.images, device=device)
        rows.append(r)
        mses.append(float((r - sample.images.float() / 255).square().mean()))
    row_titles = ["original", *(titles or [Path(c).name for c in ckpts])]
    fig = viz.image_grid([np.asarray(r) for r in rows], row_titles=row_titles, max_cols=n)
    path = viz.save_figure(fig, out)
    return {"path": str(path), "n": len(sample), "mse": mses}
