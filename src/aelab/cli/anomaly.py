"""``aelab anomaly fit | score | eval``: anomaly detection by reconstruction error."""

from __future__ import annotations

from pathlib import Path

import typer

from aelab.cli._common import SET_HELP, echo, settings, user_errors

anomaly_app = typer.Typer(help="Anomaly detection by reconstruction error.", no_args_is_help=True)

DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")


@anomaly_app.command("fit")
def fit_cmd(
    data: str = typer.Argument(
        ..., help="Normal images: folder, .npy/.npz, or fashion-mnist[:split]."
    ),
    out: Path = typer.Option(..., "--out", help="Detector folder to write."),
    normal_class: str | None = typer.Option(
        None, "--normal-class", help="Use only this class (index or name) of a labeled source."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Registered model or auto (default: the detector's)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Default: the detector's."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=2, help="Default: the detector's."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Default: the detector's."),
    score: str | None = typer.Option(
        None,
        "--score",
        help="auto (mse+latent+transform from 150 normal images, pixel below; the default), or mse, "
        "mae, ssim, latent (distance to the k nearest training codes), pixel (distance to the k "
        "nearest normal images in raw pixels), transform (a head that "
        "tells how a normal image was turned; 'rotation' is a synonym), or several joined with + "
        "(each standardised on held-out normals, then summed), e.g. ssim+latent.",
    ),
    threshold: str | None = typer.Option(
        None,
        "--threshold",
        help="fpr:R (held-out normals; default fpr:0.05), contamination:R, or a number.",
    ),
    latent_dim: int | None = typer.Option(
        None, "--latent-dim", min=1, help="Latent size (default: the model's)."
    ),
    calibration_fraction: float | None = typer.Option(
        None,
        "--calibration-fraction",
        help="Share of normal images held out to calibrate (default 0.1).",
    ),
    k: int | None = typer.Option(
        None, "--k", min=1, help="Neighbours of the latent and pixel scores (default 5)."
    ),
    max_images: int | None = typer.Option(
        None, "--max-images", help="Train on at most this many images (default 0: all)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Default 0."),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present; default), cpu, cuda, cuda:N."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a detector already in --out."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted fit in --out (its training run is OUT/train).",
    ),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
) -> None:
    """Train a detector on normal images only and calibrate its threshold."""
    with user_errors():
        from aelab.tasks import run_anomaly_fit

        given = settings({
            "normal_class": normal_class, "model": model, "epochs": epochs, "batch_size": batch_size,
            "lr": lr, "score": score, "threshold": threshold,
            "model_overrides": None if latent_dim is None else {"latent_dim": latent_dim},
            "calibration_fraction": calibration_fraction, "k": k, "max_images": max_images,
            "random_state": seed, "device": device,
        }, set_)  # fmt: skip
        res = run_anomaly_fit(data, out, resume=resume, overwrite=overwrite, **given)
        # Only the fpr rule reads the held-out normals; the others set it from the training scores
        # or take the number given.
        on = f", set on {res.n_calibration} held-out normal images" if res.target_fpr else ""
        echo(
            f"trained on {res.n_train} normal images; threshold {res.threshold:.6g} ({res.rule}{on})"
        )
        echo(f"score {res.score}")
        if res.calibration_note:
            echo(f"note: {res.calibration_note}")
        echo(f"wrote {res.path}")


@anomaly_app.command("score")
def score_cmd(
    data: str = typer.Argument(..., help="Images to score."),
    detector: Path = typer.Option(
        ..., "--detector", help="A folder written by `aelab anomaly fit`."
    ),
    out: Path = typer.Option(..., "--out", help="CSV to write: id,score,is_anomaly."),
    device: str = DeviceOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
) -> None:
    """Score images: higher is more anomalous; flag those above the threshold."""
    with user_errors():
        from aelab.tasks import run_anomaly_score

        res = run_anomaly_score(data, detector, out, device=device, overwrite=overwrite)
        echo(f"{res.n_anomalies} of {res.n} images above the threshold {res.threshold:.6g}")
        echo(f"wrote {res.path}")


@anomaly_app.command("eval")
def eval_cmd(
    detector: Path = typer.Option(
        ..., "--detector", help="A folder written by `aelab anomaly fit`."
    ),
    normal: str = typer.Option(..., "--normal", help="Normal images (data spec)."),
    anomalous: str = typer.Option(
        ...,
        "--anomalous",
        help="Anomalous images (data spec); may be the same source as --normal with class options.",
    ),
    normal_class: str | None = typer.Option(
        None, "--normal-class", help="Take only this class from --normal."
    ),
    anomalous_class: str | None = typer.Option(
        None,
        "--anomalous-class",
        help="Take only these classes (comma-separated) from --anomalous; default with --normal-class: every other class.",
    ),
    out: Path = typer.Option(
        ..., "--out", help="Folder for metrics.json, roc.png, histogram.png, grids."
    ),
    max_images: int = typer.Option(
        0, "--max-images", help="Score at most this many images of each set (0: all)."
    ),
    seed: int = typer.Option(0, "--seed"),
    device: str = DeviceOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace earlier results in --out."),
) -> None:
    """Mean loss on normal and anomalous images, ROC AUC, and figures."""
    with user_errors():
        from aelab.tasks import run_anomaly_eval

        res = run_anomaly_eval(
            detector, normal, anomalous, out, normal_class=normal_class,
            anomalous_class=anomalous_class, max_images=max_images, seed=seed, device=device,
            overwrite=overwrite,
        )  # fmt: skip
        m = res.metrics
        echo(f"mean reconstruction loss (MSE): normal {m.mean_mse_normal:.4f}, "
             f"anomalous {m.mean_mse_anomalous:.4f}")  # fmt: skip
        echo(f"ROC AUC {m.roc_auc:.4f}  average precision {m.average_precision:.4f}  "
             f"F1 {m.f1:.4f}  FPR at threshold {m.fpr:.4f}")  # fmt: skip
        if m.part_roc_auc:
            echo(
                "ROC AUC of each part: "
                + ", ".join(f"{k} {v:.4f}" for k, v in m.part_roc_auc.items())
            )
        echo(f"wrote {out / 'metrics.json'}")
        for p in res.figures.values():
            echo(f"wrote {p}")


def register(app: typer.Typer) -> None:
    app.add_typer(anomaly_app, name="anomaly")
