"""``aelab anomaly fit | score | eval``: anomaly detection by reconstruction error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aelab.cli._common import echo, user_errors
from aelab.cli._settings import CONFIG_HELP, SET_HELP, Listing, gather, settings_command

anomaly_app = typer.Typer(help="Anomaly detection by reconstruction error.", no_args_is_help=True)

DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")


def _fit_listing() -> Listing:
    from aelab.anomaly import ReconstructionDetector
    from aelab.tasks import AnomalyFitOptions
    from aelab.training import PretrainConfig

    return Listing(AnomalyFitOptions, docs=(ReconstructionDetector, PretrainConfig))


#: Old flags whose setting has another name or form: parameter -> (key, value).
_CONVERT: dict[str, Any] = {
    "latent_dim": lambda v: ("model_overrides", {"latent_dim": v}),
    "seed": lambda v: ("random_state", v),
}


def _old(flag: str) -> Any:
    return typer.Option(None, flag, hidden=True)


@anomaly_app.command("fit", cls=settings_command(_fit_listing))
def fit_cmd(
    ctx: typer.Context,
    data: str = typer.Argument(
        ..., help="Normal images: folder, .npy/.npz, or fashion-mnist[:split]."
    ),
    out: Path = typer.Option(..., "--out", help="Detector folder to write."),
    normal_class: str | None = typer.Option(
        None, "--normal-class", help="Use only this class (index or name) of a labeled source."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Registered model or auto (the default)."
    ),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Passes over the normal images (see Settings)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present; default), cpu, cuda, cuda:N."
    ),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Continue an interrupted fit in --out (its training run is OUT/train).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a detector already in --out."
    ),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    batch_size: int | None = _old("--batch-size"),
    lr: float | None = _old("--lr"),
    score: str | None = _old("--score"),
    threshold: str | None = _old("--threshold"),
    latent_dim: int | None = _old("--latent-dim"),
    calibration_fraction: float | None = _old("--calibration-fraction"),
    k: int | None = _old("--k"),
    max_images: int | None = _old("--max-images"),
    seed: int | None = _old("--seed"),
) -> None:
    """Train a detector on normal images only and calibrate its threshold."""
    with user_errors():
        from aelab.tasks import run_anomaly_fit

        flags = {"normal_class": normal_class, "model": model, "epochs": epochs, "device": device}
        given = gather(ctx, _fit_listing(), flags, set_, config, _CONVERT)
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
