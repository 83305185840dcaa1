"""``aelab pretrain``, ``finetune``, ``predict``, ``evaluate`` and ``reconstruct``.

Options left unset fall through to the task's config (its defaults live in
one place, the config dataclass); ``--set key=value`` reaches every other setting.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from aelab.cli._common import SET_HELP, echo, settings, user_errors


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


class Amp(StrEnum):
    auto = "auto"
    bf16 = "bf16"
    none = "none"


class Loss(StrEnum):
    mse = "mse"
    l1 = "l1"
    bce = "bce"


DataArg = typer.Argument(..., help="Image folder, .npy/.npz file, or fashion-mnist[:train|:test].")
DeviceOpt = typer.Option(
    None, "--device", help="auto (CUDA when present; default), cpu, cuda, cuda:N."
)
SeedOpt = typer.Option(
    None, "--seed", help="Seed for splits, initialisation and shuffling (default 0)."
)
SkipBadOpt = typer.Option(
    False, "--skip-bad", help="Skip unreadable images (listed) instead of failing."
)
LabelsOpt = typer.Option(None, "--labels", help="Labels file (.npy or .csv) for array data.")
SetOpt = typer.Option(None, "--set", help=SET_HELP)
AmpOpt = typer.Option(
    None,
    "--amp",
    help="Mixed precision (default auto): auto is bf16 where the hardware has native bf16 "
    "and the model is not small, else float32 (the choice is printed and recorded in "
    "config.json); bf16; or none (float32).",
)
Bf16Opt = typer.Option(False, "--bf16", help="The same as --amp bf16 (kept for old scripts).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output.")


def _source(data: str, labels: Path | None = None, skip_bad: bool = False) -> object:
    from aelab.tasks import Source

    return Source(data, None if labels is None else str(labels), skip_bad)


def _value(e: StrEnum | None) -> str | None:
    return None if e is None else e.value


def _amp(amp: Amp | None, bf16: bool) -> str | None:
    """``--amp``, or ``bf16`` for the old ``--bf16`` flag; refuses the two disagreeing."""
    if bf16 and amp not in (None, Amp.bf16):
        raise ValueError(f"--bf16 and --amp {amp.value} contradict each other; give one of them")
    return "bf16" if bf16 else _value(amp)


def pretrain_cmd(
    data: str = DataArg,
    out: Path = typer.Option(..., "--out", help="Run folder; the checkpoint goes to OUT/pretrain."),
    model: str | None = typer.Option(
        None, "--model", help="Registered model (see `aelab models`) or auto (default)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Passes over the images (default 10)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=2, help="Default 128."),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 0.002)."),
    loss: Loss | None = typer.Option(None, "--loss", help="Reconstruction loss (default mse)."),
    augment: Augment | None = typer.Option(
        None, "--augment", help="Augmentation of the inputs (default none)."
    ),
    mask_ratio: float | None = typer.Option(
        None,
        "--mask-ratio",
        help="Masked-patch pre-training: hide this share of 4x4 squares from the encoder "
        "and reconstruct the whole image (default 0: plain autoencoder).",
    ),
    val_fraction: float | None = typer.Option(
        None, "--val-fraction", help="Share held out to monitor val_loss (default 0.05)."
    ),
    max_images: int | None = typer.Option(
        None, "--max-images", help="Use at most this many images (default 0: all)."
    ),
    amp: Amp | None = AmpOpt,
    bf16: bool = Bf16Opt,
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run in OUT/pretrain."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    seed: int | None = SeedOpt,
    device: str | None = DeviceOpt,
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
    set_: list[str] | None = SetOpt,
) -> None:
    """Pre-train an autoencoder on images without labels (reconstruction loss).

    Runs data-parallel unchanged under torchrun (--batch-size is the global batch).
    """
    with user_errors():
        from aelab.tasks import run_pretrain

        given = settings({
            "model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "loss": _value(loss), "augment": _value(augment), "mask_ratio": mask_ratio,
            "val_fraction": val_fraction, "max_images": max_images, "amp": _amp(amp, bf16),
            "seed": seed, "device": device,
        }, set_)  # fmt: skip
        res = run_pretrain(_source(data, skip_bad=skip_bad), out, resume=resume, overwrite=overwrite,
                           stream=stream, num_workers=num_workers, **given)  # fmt: skip
        echo(f"wrote {res.run_dir} (final train_loss {res.train_loss:.5f})")


def finetune_cmd(
    data: str = DataArg,
    out: Path = typer.Option(..., "--out", help="Run folder; the checkpoint goes to OUT/NAME."),
    init: Path | None = typer.Option(
        None, "--init", help="A pretrain run folder to start from (else from scratch)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model when starting from scratch (default auto)."
    ),
    name: str = typer.Option("finetune", "--name", help="Subfolder of OUT for this run."),
    labels_per_class: int | None = typer.Option(
        None,
        "--labels-per-class",
        help="Labeled images per class (default 0: all not in validation).",
    ),
    val_per_class: int | None = typer.Option(
        None, "--val-per-class", help="Validation images per class (default 0: use --val-fraction)."
    ),
    val_fraction: float | None = typer.Option(None, "--val-fraction", help="Default 0.1."),
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
    patience: int | None = typer.Option(
        None, "--patience", help="Early stopping on val_acc after this many epochs (default: off)."
    ),
    amp: Amp | None = AmpOpt,
    bf16: bool = Bf16Opt,
    resume: bool = typer.Option(False, "--resume"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    seed: int | None = SeedOpt,
    device: str | None = DeviceOpt,
    skip_bad: bool = SkipBadOpt,
    labels: Path | None = LabelsOpt,
    set_: list[str] | None = SetOpt,
) -> None:
    """Fine-tune the encoder and a classifier head on (few) labeled images."""
    with user_errors():
        from aelab.tasks import run_finetune

        given = settings({
            "model": model, "labels_per_class": labels_per_class, "val_per_class": val_per_class,
            "val_fraction": val_fraction, "augment": _value(augment), "epochs": epochs,
            "batch_size": batch_size, "lr": lr, "recon_weight": recon_weight,
            "freeze_encoder_epochs": freeze_encoder_epochs, "encoder_lr_mult": encoder_lr_mult,
            "label_smoothing": label_smoothing, "semi": _value(semi),
            "unlabeled_weight": unlabeled_weight, "threshold": threshold,
            "unlabeled_ratio": unlabeled_ratio, "distribution_alignment": distribution_alignment,
            "ema_decay": ema_decay, "patience": patience or None, "amp": _amp(amp, bf16),
            "seed": seed, "device": device,
        }, set_)  # fmt: skip
        res = run_finetune(_source(data, labels, skip_bad), out, init=init, name=name,
                           recipe=recipe.value, resume=resume, overwrite=overwrite, **given)  # fmt: skip
        acc = res.best_val_acc
        echo(f"wrote {res.run_dir}" + (f" (best val_acc {acc:.4f})" if acc is not None else ""))


def predict_cmd(
    data: str = DataArg,
    ckpt: Path = typer.Option(..., "--ckpt", help="A finetune run folder."),
    out: Path = typer.Option(..., "--out", help="CSV to write (id,label)."),
    batch_size: int = typer.Option(256, "--batch-size", min=1),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."
    ),
    skip_bad: bool = SkipBadOpt,
    overwrite: bool = OverwriteOpt,
    probabilities: bool = typer.Option(
        False, "--probabilities",
        help="Also write each class's probability (p_<class>) and the margin between the two "
        "most probable classes, to review doubtful images or choose what to label next.",
    ),  # fmt: skip
) -> None:
    """Predict a class for every image; write a submission CSV in input order."""
    with user_errors():
        from aelab.tasks import run_predict
        from aelab.tasks.infer import DOUBTFUL_MARGIN

        res = run_predict(_source(data, skip_bad=skip_bad), ckpt, out, batch_size=batch_size,
                          device=device, overwrite=overwrite,
                          probabilities=probabilities)  # fmt: skip
        doubt = (f"; {res.n_doubtful} with a margin under {DOUBTFUL_MARGIN:g}"
                 if probabilities else "")  # fmt: skip
        echo(f"wrote {res.path} ({res.n} rows{doubt})")


def evaluate_cmd(
    data: str = DataArg,
    ckpt: Path = typer.Option(..., "--ckpt", help="A finetune run folder."),
    out: Path | None = typer.Option(None, "--out", help="Also write the metrics as JSON here."),
    labels: Path | None = LabelsOpt,
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."
    ),
    skip_bad: bool = SkipBadOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Accuracy, per-class accuracy and confusion matrix on labeled images."""
    with user_errors():
        from aelab.tasks import run_evaluate

        res = run_evaluate(_source(data, labels, skip_bad), ckpt, out=out, device=device,
                           overwrite=overwrite)  # fmt: skip
        echo(f"accuracy {res.accuracy:.4f} on {res.n_samples} images")
        for name, acc in zip(res.class_names, res.per_class_accuracy, strict=True):
            echo(f"  {name:>20s}  " + ("   n/a" if acc is None else f"{acc:.4f}"))
        echo("confusion matrix (rows true, columns predicted):")
        for row in res.confusion_matrix:
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
    seed: int = typer.Option(0, "--seed", help="Seed of the image sample."),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."
    ),
    skip_bad: bool = SkipBadOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Originals above their reconstructions, as one PNG grid."""
    with user_errors():
        from aelab.tasks import run_reconstruct

        res = run_reconstruct(_source(data, skip_bad=skip_bad), ckpt, out, n=n, seed=seed,
                              device=device, overwrite=overwrite)  # fmt: skip
        mse = ", ".join(f"{m:.5f}" for m in res.mse)
        echo(f"wrote {res.path} ({res.n} images, mean squared error {mse})")


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain_cmd)
    app.command("finetune")(finetune_cmd)
    app.command("predict")(predict_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("reconstruct")(reconstruct_cmd)
