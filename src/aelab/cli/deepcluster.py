"""``aelab deepcluster``: alternate clustering the latents (EKM or K-means) and fine-tuning the encoder."""

from __future__ import annotations

from pathlib import Path

import typer

from aelab.cli._common import SET_HELP, echo, settings, user_errors


def deepcluster(
    data: str = typer.Argument(
        ..., help="Image folder, .npy/.npz file, or fashion-mnist[:train|:test]."
    ),
    init: Path = typer.Option(..., "--init", help="A pre-trained run folder (e.g. RUN/pretrain)."),
    k: int = typer.Option(..., "--k", min=1, help="Number of clusters."),
    out: Path = typer.Option(
        ..., "--out", help="Run folder; results go to OUT/NAME (default deepcluster-METHOD)."
    ),
    method: str | None = typer.Option(
        None, "--method", help="ekm (EKM weights in the loss; default) or kmeans (hard assignment)."
    ),
    name: str | None = typer.Option(None, "--name", help="Subfolder of OUT for this run."),
    rounds: int | None = typer.Option(
        None, "--rounds", min=1, help="Cluster / fine-tune alternations (default 10)."
    ),
    epochs_per_round: int | None = typer.Option(
        None,
        "--epochs-per-round",
        min=1,
        help="Fine-tuning epochs per round, centroids fixed (default 1).",
    ),
    gamma: float | None = typer.Option(
        None,
        "--gamma",
        min=0.0,
        help="Weight of the clustering loss against reconstruction (default 1).",
    ),
    alpha: str | None = typer.Option(
        None,
        "--alpha",
        help="EKM alpha in the clustering space: a number, auto (2 / mean squared distance "
        "to the mean, re-derived each round) or a multiple of auto such as 3x.",
    ),
    space: str | None = typer.Option(
        None, "--space", help="Clustering space: raw, l2 (unit-normalised, default), pca, l2-pca."
    ),
    pca_dim: int | None = typer.Option(
        None, "--pca-dim", min=1, help="Dimensions of the PCA spaces (default 32)."
    ),
    lr: float | None = typer.Option(
        None, "--lr", help="Learning rate of the fine-tuning (default 1e-4)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=2, help="Default 128."),
    classes: str | None = typer.Option(
        None, "--classes", help="Use only these classes (0,1,2 or names), relabelled 0..k-1."
    ),
    ratio: str | None = typer.Option(
        None, "--ratio", help="Class sizes in this ratio, e.g. 2:1:1."
    ),
    n: int | None = typer.Option(None, "--n", min=1, help="Images in all (seeded sample)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    seed: int | None = typer.Option(None, "--seed", help="Default 0."),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present; default), cpu, cuda, cuda:N."
    ),
    labels: Path | None = typer.Option(None, "--labels", help="Labels file for array data."),
    progress: bool = typer.Option(False, "--progress", help="Show progress bars."),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
) -> None:
    """Deep clustering: fine-tune a pre-trained autoencoder so its latents cluster (EKM or K-means).

    Labels, when the data has them, only score the rounds (accuracy, NMI, ARI).
    """
    with user_errors():
        from aelab.data import parse_class_list, parse_ratio
        from aelab.tasks import Source, run_deepcluster

        given = settings({
            "k": k, "method": method, "rounds": rounds, "epochs_per_round": epochs_per_round,
            "gamma": gamma, "alpha": alpha, "space": space, "n_components": pca_dim, "lr": lr,
            "batch_size": batch_size, "n": n, "seed": seed, "device": device,
            "progress": progress or None,
            "classes": None if classes is None else parse_class_list(classes),
            "ratio": None if ratio is None else parse_ratio(ratio),
        }, set_)  # fmt: skip
        res = run_deepcluster(Source(data, None if labels is None else str(labels)), init, out,
                              name=name, overwrite=overwrite, log=echo, **given)  # fmt: skip
    first, last = res.rounds[0], res.rounds[-1]
    echo(
        f"loss over all images: round 1 {first['loss_before']:.4g} -> {first['loss_after']:.4g}, "
        f"round {last['round']} {last['loss_before']:.4g} -> {last['loss_after']:.4g}"
    )
    echo(f"wrote {res.run_dir} (checkpoint, labels.csv, centroids.npy, rounds.csv, summary.json)")


def register(app: typer.Typer) -> None:
    app.command("deepcluster")(deepcluster)
