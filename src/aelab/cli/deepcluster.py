"""``aelab deepcluster``: alternate clustering the latents (EKM or K-means) and fine-tuning the encoder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from aelab.cli._common import echo, user_errors
from aelab.cli._settings import CONFIG_HELP, SET_HELP, Listing, gather, settings_command


def _listing() -> Listing:
    from aelab.tasks import DeepClusterOptions

    return Listing(DeepClusterOptions)


def _parse(name: str, text: str) -> Any:
    import aelab.data

    return getattr(aelab.data, name)(text)


#: Old flags whose setting has another name or form: parameter -> (key, value).
_CONVERT: dict[str, Any] = {
    "pca_dim": lambda v: ("n_components", v),
    "classes": lambda v: ("classes", _parse("parse_class_list", v)),
    "ratio": lambda v: ("ratio", _parse("parse_ratio", v)),
}


def _old(flag: str) -> Any:
    return typer.Option(None, flag, hidden=True)


def deepcluster(
    ctx: typer.Context,
    data: str = typer.Argument(
        ..., help="Image folder, .npy/.npz file, or fashion-mnist[:train|:test]."
    ),
    init: Path = typer.Option(..., "--init", help="A pre-trained run folder (e.g. RUN/pretrain)."),
    k: int = typer.Option(..., "--k", min=1, help="Number of clusters."),
    out: Path = typer.Option(
        ..., "--out", help="Run folder; results go to OUT/NAME (default deepcluster-METHOD)."
    ),
    name: str | None = typer.Option(None, "--name", help="Subfolder of OUT for this run."),
    labels: Path | None = typer.Option(None, "--labels", help="Labels file for array data."),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present; default), cpu, cuda, cuda:N."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    method: str | None = _old("--method"),
    rounds: int | None = _old("--rounds"),
    epochs_per_round: int | None = _old("--epochs-per-round"),
    gamma: float | None = _old("--gamma"),
    alpha: str | None = _old("--alpha"),
    space: str | None = _old("--space"),
    pca_dim: int | None = _old("--pca-dim"),
    lr: float | None = _old("--lr"),
    batch_size: int | None = _old("--batch-size"),
    classes: str | None = _old("--classes"),
    ratio: str | None = _old("--ratio"),
    n: int | None = _old("--n"),
    seed: int | None = _old("--seed"),
    progress: bool = typer.Option(False, "--progress", hidden=True),
) -> None:
    """Deep clustering: fine-tune a pre-trained autoencoder so its latents cluster (EKM or K-means).

    Labels, when the data has them, only score the rounds (accuracy, NMI, ARI).
    """
    with user_errors():
        from aelab.tasks import Source, run_deepcluster

        given = gather(ctx, _listing(), {"k": k, "device": device}, set_, config, _CONVERT)
        res = run_deepcluster(Source(data, None if labels is None else str(labels)), init, out,
                              name=name, overwrite=overwrite, log=echo, **given)  # fmt: skip
    first, last = res.rounds[0], res.rounds[-1]
    echo(
        f"loss over all images: round 1 {first['loss_before']:.4g} -> {first['loss_after']:.4g}, "
        f"round {last['round']} {last['loss_before']:.4g} -> {last['loss_after']:.4g}"
    )
    echo(f"wrote {res.run_dir} (checkpoint, labels.csv, centroids.npy, rounds.csv, summary.json)")


def register(app: typer.Typer) -> None:
    app.command("deepcluster", cls=settings_command(_listing))(deepcluster)
