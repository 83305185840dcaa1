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


def load_for_checkpoint(
    data: str | Path | ImageDataset,
    ckpt: str | Path,
    *,
    skip_bad: bool = False,
    device: str = "auto",
    labels: str | Path | None = None,
) -> ModelData:
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
        ds = load_dataset(
            data,
            labels=labels,
            image_size=cfg.image_size,
            channels=cfg.in_channels,
            skip_bad=skip_bad,
        )
    return ModelData(model=model, model_name=meta["model"], data=ds, meta=meta)


def model_for_data(
    ds: ImageDataset, model: str = "auto", *, num_classes: int | None = None, **overrides: Any
) -> ModelData:
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
    return ModelData(
        model=net, model_name=name, data=ds, meta={"model": name, "config": cfg.to_dict()}
    )


def write_submission(
    path: str | Path, ids: list[str], labels: np.ndarray, class_names: list[str] | None
) -> Path:
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
    arrays: dict[str, np.ndarray] = {
        "z": z.astype(np.float32),
        "ids": np.asarray(ds.ids, dtype=str),
    }
    if ds.labels is not None:
        arrays["labels"] = ds.labels.numpy()
    if ds.class_names is not None:
        arrays["class_names"] = np.asarray(ds.class_names, dtype=str)
    return write_npz(path, **arrays)


def save_run_config(out_dir: str | Path, command: str, options: dict[str, Any]) -> Path:
    """Record the command and options a run was made with (``run.json``)."""
    from aelab import __version__

    return write_json(
        Path(out_dir) / "run.json", {"command": command, "aelab": __version__, "options": options}
    )


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
    recipe: str = "default",
    augment: str | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    recon_weight: float | None = None,
    freeze_encoder_epochs: int | None = None,
    encoder_lr_mult: float | None = None,
    label_smoothing: float | None = None,
    semi: str | None = None,
    unlabeled_weight: float | None = None,
    threshold: float | None = None,
    unlabeled_ratio: int | None = None,
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

    The settings start from the named ``recipe`` (see
    :data:`aelab.training.FINETUNE_RECIPES`; ``"default"`` is FixMatch on the
    unlabeled images, ``"plain"`` supervised fine-tuning only); every option
    left at ``None`` keeps the recipe's value. Recipes that learn from
    unlabeled images get every image not held out for validation.

    Returns
    -------
    dict
        ``run_dir``, ``history``, ``best_val_acc``, ``best_epoch``, split sizes.
    """
    from aelab._runtime import seed_everything
    from aelab.data import conform, load_dataset, split_dataset
    from aelab.training import finetune, finetune_recipe, load_model

    ds = (
        data
        if isinstance(data, ImageDataset)
        else load_dataset(data, labels=labels, skip_bad=skip_bad)
    )
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
    config, augment = finetune_recipe(
        recipe, augment=augment, epochs=epochs, batch_size=batch_size, lr=lr,
        recon_weight=recon_weight, freeze_encoder_epochs=freeze_encoder_epochs,
        encoder_lr_mult=encoder_lr_mult, label_smoothing=label_smoothing, semi=semi,
        unlabeled_weight=unlabeled_weight, threshold=threshold, unlabeled_ratio=unlabeled_ratio,
        patience=patience, amp=amp, seed=seed, device=device, progress=progress,
    )  # fmt: skip
    run_dir = Path(out) / name
    result = finetune(
        net, parts.labeled, val=parts.val,
        unlabeled=parts.unlabeled if config.uses_unlabeled else None,
        config=config, out_dir=run_dir, augment=_augment(augment), resume=resume,
        overwrite=overwrite, model_name=model_name,
    )  # fmt: skip
    save_run_config(run_dir, "finetune", {"data": str(data) if not isinstance(data, ImageDataset) else "<memory>",
                                          "init": None if init is None else str(init), "model": model_name,
                                          "recipe": recipe, "augment": augment,
                                          "labels_per_class": labels_per_class,
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
        raise ValueError(
            "evaluation needs labeled data (class subfolders, labels in the .npz, or --labels)"
        )
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
    idx = np.sort(
        np.random.default_rng(seed).choice(
            len(first.data), size=min(n, len(first.data)), replace=False
        )
    )
    sample = first.data.subset(idx)
    rows, mses = [sample.images], []
    for i, ck in enumerate(ckpts):
        md = first if i == 0 else load_for_checkpoint(sample, ck, device=device)
        if md.data.image_shape != sample.image_shape:
            raise ValueError(
                f"{ck} expects images of shape {md.data.image_shape}, the first checkpoint {sample.image_shape}"
            )
        r = reconstruct(md.model, sample.images, device=device)
        rows.append(r)
        mses.append(float((r - sample.images.float() / 255).square().mean()))
    row_titles = ["original", *(titles or [Path(c).name for c in ckpts])]
    fig = viz.image_grid([np.asarray(r) for r in rows], row_titles=row_titles, max_cols=n)
    path = viz.save_figure(fig, out)
    return {"path": str(path), "n": len(sample), "mse": mses}


def _class_index(ds: ImageDataset, cls: str | int) -> int:
    """Index of a class given by index or name."""
    if ds.labels is None:
        raise ValueError("a class was named, but this data has no labels")
    names = ds.class_names or []
    if isinstance(cls, str) and cls in names:
        return names.index(cls)
    try:
        k = int(cls)
    except ValueError:
        raise ValueError(
            f"unknown class {cls!r}; classes are: {', '.join(names) or 'indices only'}"
        ) from None
    if not 0 <= k < (ds.num_classes or 0):
        raise ValueError(f"class {k} out of range; this data has {ds.num_classes} classes")
    return k


def split_by_class(ds: ImageDataset, classes: list[str | int]) -> tuple[ImageDataset, ImageDataset]:
    """The images of ``classes`` and the images of every other class."""
    keep = [_class_index(ds, c) for c in classes]
    mask = np.isin(ds.labels.numpy(), keep)
    return ds.subset(np.flatnonzero(mask)), ds.subset(np.flatnonzero(~mask))


def _load(spec: str | Path | ImageDataset) -> ImageDataset:
    from aelab.data import load_dataset

    return spec if isinstance(spec, ImageDataset) else load_dataset(spec)


def run_anomaly_fit(data: str | Path | ImageDataset, out: str | Path, *, normal_class: str | int | None = None,
                    model: str = "auto", epochs: int = 10, batch_size: int = 128, lr: float = 2e-3,
                    score: str = "mse", threshold: str = "fpr:0.05", latent_dim: int = 0,
                    max_images: int = 0, seed: int = 0, device: str = "auto",
                    progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Train a :class:`~aelab.anomaly.ReconstructionDetector` on normal images; save it to ``out``."""
    from aelab.anomaly import ReconstructionDetector

    ds = _load(data)
    if normal_class is not None:
        ds, _ = split_by_class(ds, [normal_class])
    ds = _subsample(ds, max_images, seed)
    if len(ds) == 0:
        raise ValueError("no normal images to train on")
    det = ReconstructionDetector(
        model=model, model_overrides={"latent_dim": latent_dim} if latent_dim else None, score=score,
        threshold=threshold, epochs=epochs, batch_size=batch_size, lr=lr, device=device,
        random_state=seed, verbose=progress,
    )  # fmt: skip
    det.fit(ds)
    path = det.save(out)
    return {"path": str(path), "n_train": len(det.decision_scores_), "threshold": det.threshold_,
            "rule": str(det.threshold_rule_), "history": det.history_, "detector": det}  # fmt: skip


def run_anomaly_score(data: str | Path | ImageDataset, detector: str | Path, out: str | Path, *,
                      device: str = "auto") -> dict[str, Any]:  # fmt: skip
    """Score images with a saved detector; write ``id,score,is_anomaly``."""
    from aelab.anomaly import ReconstructionDetector

    det = ReconstructionDetector.load(detector, device=device)
    ds = _load(data)
    s = det.decision_function(ds)
    flag = (s > det.threshold_).astype(int)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "score", "is_anomaly"])
    for i, v, f in zip(ds.ids, s.tolist(), flag.tolist(), strict=True):
        w.writerow([i, f"{v:.8g}", f])
    path = write_text(out, buf.getvalue())
    return {
        "path": str(path),
        "n": len(s),
        "n_anomalies": int(flag.sum()),
        "threshold": det.threshold_,
        "scores": s,
    }


def anomaly_figures(
    det: Any, normal: ImageDataset, anomalous: ImageDataset, n_show: int = 8
) -> dict[str, Any]:
    """ROC curve, score histogram, and image/reconstruction/error-map grids of a detector.

    Returns a dict of name -> matplotlib Figure, plus the two score arrays.
    """
    from aelab import viz

    s_n, s_a = det.decision_function(normal), det.decision_function(anomalous)
    y = np.r_[np.zeros(len(s_n)), np.ones(len(s_a))]
    figs: dict[str, Any] = {
        "roc": viz.roc_curve_plot(y, np.r_[s_n, s_a], label=f"{det.score} score"),
        "histogram": viz.score_histogram(s_n, s_a, threshold=det.threshold_),
    }
    both = [normal, anomalous]
    scores = np.r_[s_n, s_a]
    order = np.argsort(scores)

    def pick(idx: np.ndarray) -> ImageDataset:
        rows = [(0, i) if i < len(s_n) else (1, i - len(s_n)) for i in idx.tolist()]
        imgs = [both[src].images[j] for src, j in rows]
        ids = [both[src].ids[j] for src, j in rows]
        import torch

        return ImageDataset(images=torch.stack(imgs), labels=None, ids=ids)

    for name, idx in (
        ("most_anomalous", order[::-1][:n_show]),
        ("least_anomalous", order[:n_show]),
    ):
        sub = pick(idx)
        recon, maps = det.score_maps(sub)
        titles = [f"{scores[i]:.4g}" for i in idx]
        figs[name] = viz.image_grid(
            [sub.images.numpy(), recon, maps], row_titles=["image", "reconstruction", "error"],
            row_cmaps=[None, None, "inferno"], col_titles=titles, max_cols=n_show,
        )  # fmt: skip
    figs["_scores"] = (s_n, s_a)
    return figs


def run_anomaly_eval(detector: str | Path | Any, normal: str | Path | ImageDataset,
                     anomalous: str | Path | ImageDataset, out: str | Path, *,
                     normal_class: str | int | None = None, anomalous_class: str | None = None,
                     max_images: int = 0, seed: int = 0, device: str = "auto") -> dict[str, Any]:  # fmt: skip
    """Evaluate a detector on normal and anomalous images; write metrics and figures to ``out``.

    With ``normal_class``, the normal images are that class of ``normal``; the
    anomalous ones are ``anomalous_class`` (comma-separated) of ``anomalous``,
    or by default every other class.
    """
    from aelab import viz
    from aelab.anomaly import ReconstructionDetector
    from aelab.data.splits import parse_class_list

    det = (
        detector
        if isinstance(detector, ReconstructionDetector)
        else ReconstructionDetector.load(detector, device=device)
    )
    n_src = _load(normal)
    same = anomalous is normal or (
        not isinstance(normal, ImageDataset) and str(anomalous) == str(normal)
    )
    a_src = n_src if same else _load(anomalous)
    n_ds, rest = (
        split_by_class(n_src, [normal_class]) if normal_class is not None else (n_src, None)
    )
    if anomalous_class is not None:
        a_ds, _ = split_by_class(a_src, parse_class_list(anomalous_class))
    elif same and rest is not None:
        a_ds = rest  # one labeled source: the other classes are the anomalies
    elif same:
        raise ValueError(
            "--normal and --anomalous are the same data; give --normal-class or --anomalous-class"
        )
    else:
        a_ds = a_src
    n_ds, a_ds = _subsample(n_ds, max_images, seed), _subsample(a_ds, max_images, seed + 1)
    metrics = det.evaluate(n_ds, a_ds)
    figs = anomaly_figures(det, n_ds, a_ds)
    out = Path(out)
    files = [str(write_json(out / "metrics.json", metrics))]
    for name, fig in figs.items():
        if not name.startswith("_"):
            files.append(str(viz.save_figure(fig, out / f"{name}.png")))
    return {"metrics": metrics, "files": files}
