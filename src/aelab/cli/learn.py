"""``aelab pretrain``, ``finetune``, ``predict``, ``evaluate`` and ``reconstruct``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from aelab.cli._common import echo, user_errors


class Augment(StrEnum):
    none = "none"
    weak = "weak"
    standard = "standard"


class Semi(StrEnum):
    none = "none"
    fixmatch = "fixmatch"


class Recipe(StrEnum):
    default = "default"
    plain = "plain"
    fixmatch = "fixmatch"


class Loss(StrEnum):
    mse = "mse"
    l1 = "l1"
    bce = "bce"


DataArg = typer.Argument(..., help="Image folder, .npy/.npz file, or fashion-mnist[:train|:test].")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")
SeedOpt = typer.Option(0, "--seed", help="Seed for splits, initialisation and shuffling.")
SkipBadOpt = typer.Option(
    False, "--skip-bad", help="Skip unreadable images (listed) instead of failing."
)
LabelsOpt = typer.Option(None, "--labels", help="Labels file (.npy or .csv) for array data.")


def pretrain_cmd(
    data: str = DataArg,
    out: Path = typer.Option(..., "--out", help="Run folder; the checkpoint goes to OUT/pretrain."),
    model: str = typer.Option(
        "auto", "--model", help="Registered model (see `aelab models`) or auto."
    ),
    epochs: int = typer.Option(10, "--epochs", min=1),
    batch_size: int = typer.Option(128, "--batch-size", min=2),
    lr: float = typer.Option(2e-3, "--lr"),
    loss: Loss = typer.Option(Loss.mse, "--loss"),
    augment: Augment = typer.Option(Augment.none, "--augment", help="Augmentation of the inputs."),
    mask_ratio: float = typer.Option(
        0.0,
        "--mask-ratio",
        help="Masked-patch pre-training: hide this share of 4x4 squares from the encoder "
        "and reconstruct the whole image (0: plain autoencoder).",
    ),
    val_fraction: float = typer.Option(
        0.05, "--val-fraction", help="Share held out to monitor val_loss."
    ),
    max_images: int = typer.Option(
        0, "--max-images", help="Use at most this many images (0: all)."
    ),
    amp: bool = typer.Option(False, "--bf16", help="bf16 mixed precision."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run in OUT/pretrain."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    skip_bad: bool = SkipBadOpt,
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Read images batch by batch (folder decoded on access, .npy memory-mapped) "
        "instead of loading them: memory stays bounded for datasets larger than RAM.",
    ),
    num_workers: int = typer.Option(
        0, "--num-workers", min=0, help="Processes that read batches ahead (0: none)."
    ),
) -> None:
    """Pre-train an autoencoder on images without labels (reconstruction loss).

    Runs data-parallel unchanged under torchrun (--batch-size is the global batch).
    """
    with user_errors():
        from aelab.pipeline import run_pretrain

        res = run_pretrain(
            data, out, model=model, epochs=epochs, batch_size=batch_size, lr=lr, loss=loss.value,
            augment=augment.value, mask_ratio=mask_ratio, val_fraction=val_fraction,
            max_images=max_images,
            amp="bf16" if amp else None, resume=resume, overwrite=overwrite, seed=seed,
            device=device, skip_bad=skip_bad, stream=stream, num_workers=num_workers,
        )  # fmt: skip
        echo(f"wrote {res['run_dir']} (final train_loss {res['train_loss']:.5f})")


def finetune_cmd(
    data: str = DataArg,
    out: Path = typer.Option(..., "--out", help="Run folder; the checkpoint goes to OUT/NAME."),
    init: Path | None = typer.Option(
        None, "--init", help="A pretrain run folder to start from (else from scratch)."
    ),
    model: str = typer.Option("auto", "--model", help="Model when starting from scratch."),
    name: str = typer.Option("finetune", "--name", help="Subfolder of OUT for this run."),
    labels_per_class: int = typer.Option(
        0, "--labels-per-class", help="Labeled images per class (0: all not in validation)."
    ),
    val_per_class: int = typer.Option(
        0, "--val-per-class", help="Validation images per class (0: use --val-fraction)."
    ),
    val_fraction: float = typer.Option(0.1, "--val-fraction"),
    recipe: Recipe = typer.Option(
        Recipe.default,
        "--recipe",
        help="Named settings the options below override: default (= fixmatch: also learns "
        "from the images not labeled), fixmatch, or plain (labeled images only).",
    ),
    augment: Augment | None = typer.Option(
        None, "--augment", help="Augmentation of labeled images (default: from --recipe)."
    ),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        min=1,
        help="Passes over the labeled images; with --semi fixmatch, over the unlabeled ones (default: from --recipe).",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=2, help="Labeled images per step (default 64)."
    ),
    lr: float | None = typer.Option(
        None, "--lr", help="Peak learning rate (default: from --recipe)."
    ),
    recon_weight: float | None = typer.Option(
        None, "--recon-weight", help="Keep the reconstruction loss on with this weight (default 0)."
    ),
    freeze_encoder_epochs: int | None = typer.Option(
        None, "--freeze-encoder-epochs", help="Default: 0."
    ),
    encoder_lr_mult: float | None = typer.Option(
        None,
        "--encoder-lr-mult",
        help="Encoder learning rate relative to the head's (default: from --recipe).",
    ),
    label_smoothing: float | None = typer.Option(
        None, "--label-smoothing", help="Default: from --recipe."
    ),
    semi: Semi | None = typer.Option(
        None, "--semi", help="Use the unlabeled images: fixmatch or none (default: from --recipe)."
    ),
    unlabeled_weight: float | None = typer.Option(
        None, "--unlabeled-weight", help="Weight of the FixMatch loss (default: from --recipe)."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="FixMatch confidence threshold (default: from --recipe)."
    ),
    unlabeled_ratio: int | None = typer.Option(
        None,
        "--unlabeled-ratio",
        min=1,
        help="Unlabeled images per labeled one in a step (default: from --recipe).",
    ),
    distribution_alignment: bool | None = typer.Option(
        None,
        "--distribution-alignment/--no-distribution-alignment",
        help="FixMatch: rebalance each unlabeled batch's predictions to equal class shares "
        "before thresholding (default: from --recipe).",
    ),
    ema_decay: float | None = typer.Option(
        None,
        "--ema-decay",
        help="Predict with an exponential moving average of the weights, this decay per step; "
        "0 turns it off (default: from --recipe).",
    ),
    patience: int = typer.Option(
        0, "--patience", help="Early stopping on val_acc after this many epochs (0: off)."
    ),
    amp: bool = typer.Option(False, "--bf16", help="bf16 mixed precision."),
    resume: bool = typer.Option(False, "--resume"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    skip_bad: bool = SkipBadOpt,
    labels: Path | None = LabelsOpt,
) -> None:
    """Fine-tune the encoder and a classifier head on (few) labeled images."""
    with user_errors():
        from aelab.pipeline import run_finetune

        res = run_finetune(
            data, out, init=init, model=model, name=name, labels_per_class=labels_per_class,
            val_per_class=val_per_class, val_fraction=val_fraction, recipe=recipe.value,
            augment=None if augment is None else augment.value, epochs=epochs,
            batch_size=batch_size, lr=lr, recon_weight=recon_weight,
            freeze_encoder_epochs=freeze_encoder_epochs, encoder_lr_mult=encoder_lr_mult,
            label_smoothing=label_smoothing, semi=None if semi is None else semi.value,
            unlabeled_weight=unlabeled_weight, threshold=threshold,
            unlabeled_ratio=unlabeled_ratio,
            distribution_alignment=distribution_alignment, ema_decay=ema_decay, patience=patience or None,
            amp="bf16" if amp else None, resume=resume, overwrite=overwrite, seed=seed,
            device=device, skip_bad=skip_bad, labels=labels,
        )  # fmt: skip
        acc = res.get("best_val_acc")
        extra = f" (best val_acc {acc:.4f})" if acc is not None else ""
        echo(f"wrote {res['run_dir']}{extra}")


def predict_cmd(
    data: str = DataArg,
    ckpt: Path = typer.Option(..., "--ckpt", help="A finetune run folder."),
    out: Path = typer.Option(..., "--out", help="CSV to write (id,label)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = DeviceOpt,
    skip_bad: bool = SkipBadOpt,
) -> None:
    """Predict a class for every image; write a submission CSV in input order."""
    with user_errors():
        from aelab.pipeline import run_predict

        res = run_predict(data, ckpt, out, batch_size=batch_size, device=device, skip_bad=skip_bad)
        echo(f"wrote {res['path']} ({res['n']} rows)")


def evaluate_cmd(
    data: str = DataArg,
    ckpt: Path = typer.Option(..., "--ckpt", help="A finetune run folder."),
    out: Path | None = typer.Option(None, "--out", help="Also write the metrics as JSON here."),
    labels: Path | None = LabelsOpt,
    device: str = DeviceOpt,
    skip_bad: bool = SkipBadOpt,
) -> None:
    """Accuracy, per-class accuracy and confusion matrix on labeled images."""
    with user_errors():
        from aelab.pipeline import run_evaluate

        res = run_evaluate(data, ckpt, out=out, labels=labels, device=device, skip_bad=skip_bad)
        echo(f"accuracy {res['accuracy']:.4f} on {res['n_samples']} images")
        for name, acc in zip(res["class_names"], res["per_class_accuracy"], strict=True):
            echo(f"  {name:>20s}  {acc:.4f}")
        echo("confusion matrix (rows true, columns predicted):")
        for row in res["confusion_matrix"]:
            echo("  " + " ".join(f"{v:5d}" for v in row))
        if out is not None:
            echo(f"wrote {out}")


def reconstruct_cmd(
    data: str = DataArg,
    ckpt: list[Path] = typer.Option(
        ..., "--ckpt", help="Run folder; repeat to compare models (one row each)."
    ),
    out: Path = typer.Option(..., "--out", help="PNG to write."),
    n: int = typer.Option(16, "--n", min=1, help="Images to show."),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    skip_bad: bool = SkipBadOpt,
) -> None:
    """Originals above their reconstructions, as one PNG grid."""
    with user_errors():
        from aelab.pipeline import run_reconstruct

        res = run_reconstruct(data, ckpt, out, n=n, seed=seed, device=device, skip_bad=skip_bad)
        echo(
            f"wrote {res['path']} ({res['n']} images, mean squared error {', '.join(f'{m:.5f}' for m in res['mse'])})"
        )


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_cmd)
    app.command("finetune")(finetune_cmd)
    app.command("predict")(predict_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("reconstruct")(reconstruct_cmd)
