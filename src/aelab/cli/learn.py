"""``aelab pretrain``, ``finetune``, ``predict``, ``evaluate`` and ``reconstruct``.

Options left unset fall through to the task's config (its defaults live in
one place, the config dataclass); ``--set key=value`` reaches every other setting.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from aelab.cli._common import echo, user_errors
from aelab.cli._settings import CONFIG_HELP, SET_HELP, Listing, gather, settings_command


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


DataArg = typer.Argument(
    ...,
    help="Image folder, .npy/.npz file, or fashion-mnist[:train|:test] "
    "(--skip-bad skips unreadable images, listed; --labels FILE gives an array's labels).",
)
DeviceOpt = typer.Option(
    None, "--device", help="auto (CUDA when present; default), cpu, cuda, cuda:N."
)
SkipBadOpt = typer.Option(False, "--skip-bad", hidden=True)
LabelsOpt = typer.Option(None, "--labels", help="Labels file (.npy or .csv) for array data.")
HiddenLabelsOpt = typer.Option(
    None, "--labels", hidden=True, help="Labels file (.npy or .csv) for array data."
)
SetOpt = typer.Option(None, "--set", help=SET_HELP)
ConfigOpt = typer.Option(None, "--config", help=CONFIG_HELP)
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace an existing output.")
EpochsOpt = typer.Option(None, "--epochs", min=1, help="Passes over the images (see Settings).")
ModelOpt = typer.Option(
    None, "--model", help="Registered model (see `aelab models`) or auto (the default)."
)


def _old(flag: str) -> Any:
    """A flag that moved to ``--set``: hidden, still taking effect (with a one-line notice)."""
    return typer.Option(None, flag, hidden=True)


def _old_switch(flag: str) -> Any:
    return typer.Option(False, flag, hidden=True)


#: Old flags whose setting has another name or form: parameter -> (key, value).
_CONVERT: dict[str, Any] = {
    "bf16": lambda v: ("amp", "bf16"),
    "patience": lambda v: ("patience", v or None),
}


UnlabeledOpt = typer.Option(
    None,
    "--unlabeled",
    help="More images without labels (a flat folder or an .npy/.npz array; labels in it "
    "ignored), brought to the model's shape and used beside DATA's.",
)


def _pretrain_listing() -> Listing:
    from aelab.training import PretrainConfig

    return Listing(PretrainConfig)


def _finetune_listing() -> Listing:
    from aelab.training import FINETUNE_RECIPES, FinetuneConfig

    return Listing(FinetuneConfig, presets=FINETUNE_RECIPES)


def _source(data: str, labels: Path | None = None, skip_bad: bool = False) -> object:
    from aelab.tasks import Source

    return Source(data, None if labels is None else str(labels), skip_bad)


def pretrain_cmd(
    ctx: typer.Context,
    data: str = DataArg,
    out: Path = typer.Option(..., "--out", help="Run folder; the checkpoint goes to OUT/pretrain."),
    model: str | None = ModelOpt,
    epochs: int | None = EpochsOpt,
    device: str | None = DeviceOpt,
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run in OUT/pretrain."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Read images batch by batch (folder decoded on access, .npy memory-mapped) "
        "instead of loading them: memory stays bounded for datasets larger than RAM "
        "(--num-workers N: processes that read batches ahead).",
    ),
    unlabeled: str | None = UnlabeledOpt,
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
    skip_bad: bool = SkipBadOpt,
    num_workers: int = typer.Option(0, "--num-workers", min=0, hidden=True),
    batch_size: int | None = _old("--batch-size"),
    lr: float | None = _old("--lr"),
    loss: Loss | None = _old("--loss"),
    augment: Augment | None = _old("--augment"),
    mask_ratio: float | None = _old("--mask-ratio"),
    val_fraction: float | None = _old("--val-fraction"),
    max_images: int | None = _old("--max-images"),
    amp: Amp | None = _old("--amp"),
    bf16: bool = _old_switch("--bf16"),
    seed: int | None = _old("--seed"),
) -> None:
    """Pre-train an autoencoder on images without labels (reconstruction loss).

    Runs data-parallel unchanged under torchrun (batch_size is the global batch).
    """
    with user_errors():
        from aelab.tasks import run_pretrain

        flags = {"model": model, "epochs": epochs, "device": device}
        given = gather(ctx, _pretrain_listing(), flags, set_, config, _CONVERT)
        res = run_pretrain(_source(data, skip_bad=skip_bad), out, resume=resume, overwrite=overwrite,
                           stream=stream, num_workers=num_workers, unlabeled=unlabeled,
                           **given)  # fmt: skip
        echo(f"wrote {res.run_dir} (final train_loss {res.train_loss:.5f})")


def finetune_cmd(
    ctx: typer.Context,
    data: str = DataArg,
    out: Path = typer.Option(
        ...,
        "--out",
        help="Run folder; the checkpoint goes to OUT/finetune (OUT/NAME with --name NAME).",
    ),
    init: Path | None = typer.Option(
        None, "--init", help="A pretrain run folder to start from (else from scratch)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model when starting from scratch (default auto)."
    ),
    recipe: Recipe = typer.Option(
        Recipe.default,
        "--recipe",
        help="Named settings (listed below) that --config and --set override: default "
        "(= fixmatch: also learns from the images not labeled), fixmatch, or plain.",
    ),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        min=1,
        help="Passes over the labeled images; with semi=fixmatch, over the unlabeled ones.",
    ),
    labels_per_class: int | None = typer.Option(
        None,
        "--labels-per-class",
        help="Labeled images per class (default 0: all not in validation).",
    ),
    # Hidden to keep the help at 12 options; the data argument's help names it.
    labels: Path | None = HiddenLabelsOpt,
    unlabeled: str | None = typer.Option(
        None,
        "--unlabeled",
        help="More images without labels for FixMatch's pool (a flat folder or an .npy/.npz "
        "array; labels in it ignored), beside DATA's images not labeled.",
    ),
    device: str | None = DeviceOpt,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    config: Path | None = ConfigOpt,
    set_: list[str] | None = SetOpt,
    name: str = typer.Option("finetune", "--name", hidden=True),
    skip_bad: bool = SkipBadOpt,
    val_per_class: int | None = _old("--val-per-class"),
    val_fraction: float | None = _old("--val-fraction"),
    augment: Augment | None = _old("--augment"),
    batch_size: int | None = _old("--batch-size"),
    lr: float | None = _old("--lr"),
    recon_weight: float | None = _old("--recon-weight"),
    freeze_encoder_epochs: int | None = _old("--freeze-encoder-epochs"),
    encoder_lr_mult: float | None = _old("--encoder-lr-mult"),
    label_smoothing: float | None = _old("--label-smoothing"),
    semi: Semi | None = _old("--semi"),
    unlabeled_weight: float | None = _old("--unlabeled-weight"),
    threshold: float | None = _old("--threshold"),
    unlabeled_ratio: int | None = _old("--unlabeled-ratio"),
    distribution_alignment: bool | None = typer.Option(
        None, "--distribution-alignment/--no-distribution-alignment", hidden=True
    ),
    ema_decay: float | None = _old("--ema-decay"),
    patience: int | None = _old("--patience"),
    amp: Amp | None = _old("--amp"),
    bf16: bool = _old_switch("--bf16"),
    seed: int | None = _old("--seed"),
) -> None:
    """Fine-tune the encoder and a classifier head on (few) labeled images."""
    with user_errors():
        from aelab.tasks import run_finetune

        flags = {"model": model, "epochs": epochs, "labels_per_class": labels_per_class,
                 "device": device}  # fmt: skip
        given = gather(ctx, _finetune_listing(), flags, set_, config, _CONVERT, preset=recipe.value)
        res = run_finetune(_source(data, labels, skip_bad), out, init=init, name=name,
                           recipe=recipe.value, resume=resume, overwrite=overwrite,
                           unlabeled=unlabeled, **given)  # fmt: skip
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
    app.command("pretrain", cls=settings_command(_pretrain_listing))(pretrain_cmd)
    app.command("finetune", cls=settings_command(_finetune_listing))(finetune_cmd)
    app.command("predict")(predict_cmd)
    app.command("evaluate")(evaluate_cmd)
    app.command("reconstruct")(reconstruct_cmd)
