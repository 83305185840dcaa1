"""``aelab deepcluster``: alternate clustering the latents (EKM or K-means) and fine-tuning the encoder."""

from __future__ import annotations

from pathlib import Path

import typer

from aelab.cli._common import echo, user_errors


def deepcluster(
    data: str = typer.Argument(
        ..., help="Image folder, .npy/.npz file, or fashion-mnist[:train|:test]."
    ),
    init: Path = typer.Option(..., "--init", help="A pre-trained run folder (e.g. RUN/pretrain)."),
    k: int = typer.Option(..., "--k", min=1, help="Number of clusters."),
    out: Path = typer.Option(
        ..., "--out", help="Run folder; results go to OUT/NAME (default deepcluster-METHOD)."
    ),
    method: str = typer.Option(
        "ekm", "--method", help="ekm (EKM weights in the loss) or kmeans (hard assignment)."
    ),
    name: str | None = typer.Option(None, "--name", help="Subfolder of OUT for this run."),
    rounds: int = typer.Option(10, "--rounds", min=1, help="Cluster / fine-tune alternations."),
    epochs_per_round: int = typer.Option(
        1, "--epochs-per-round", min=1, help="Fine-tuning epochs per round (centroids fixed)."
    ),
    gamma: float = typer.Option(
        1.0, "--gamma", min=0.0, help="Weight of the clustering loss against reconstruction."
    ),
    alpha: str = typer.Option(
        "auto",
        "--alpha",
        help="EKM alpha in the clustering space: a number, auto (2 / mean squared distance "
        "to the mean, re-derived each round) or a multiple of auto such as 3x.",
    ),
    space: str = typer.Option(
        "l2", "--space", help="Clustering space: raw, l2 (unit-normalised, default), pca, l2-pca."
    ),
    pca_dim: int = typer.Option(32, "--pca-dim", min=1, help="Dimensions of the PCA spaces."),
    lr: float = typer.Option(1e-4, "--lr", help="Learning rate of the fine-tuning."),
    batch_size: int = typer.Option(128, "--batch-size", min=2),
    classes: str | None = typer.Option(
        None, "--classes", help="Use only these classes (0,1,2 or names), relabelled 0..k-1."
    ),
    ratio: str | None = typer.Option(
        None, "--ratio", help="Class sizes in this ratio, e.g. 2:1:1."
    ),
    n: int | None = typer.Option(None, "--n", min=1, help="Images in all (seeded sample)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."
    ),
    labels: Path | None = typer.Option(None, "--labels", help="Labels file for array data."),
    progress: bool = typer.Option(False, "--progress", help="Show progress bars."),
) -> None:
    """Deep clustering: fine-tune a pre-trained autoencoder so its latents cluster (EKM or K-means).

    Labels, when the data has them, only score the rounds (accuracy, NMI, ARI).
    """
    with user_errors():
        from aelab.data import parse_class_list, parse_ratio
        from aelab.pipeline import run_deepcluster

        res = run_deepcluster(
            data, init, out, k=k, method=method, name=name, rounds=rounds,
            epochs_per_round=epochs_per_round, gamma=gamma, alpha=alpha, space=space,
            n_components=pca_dim, lr=lr, batch_size=batch_size,
            classes=None if classes is None else parse_class_list(classes),
            ratio=None if ratio is None else parse_ratio(ratio), n=n, overwrite=overwrite,
            seed=seed, device=device, labels=labels, progress=progress, log=echo,
        )  # fmt: skip
    first, last = res["history"][0], res["history"][-1]
    echo(
        f"loss over all images: round 1 {first['loss_before']:.4g} -> {first['loss_after']:.4g}, "
        f"round {last['round']} {last['loss_before']:.4g} -> {last['loss_after']:.4g}"
    )
    echo(
        f"wrote {res['run_dir']} (checkpoint, labels.csv, centroids.npy, rounds.csv, summary.json)"
    )


def register(app: typer.Typer) -> None:
    app.command("deepcluster")(deepcluster)
