"""``aelab cluster``: Equilibrium K-Means on a feature file."""

from __future__ import annotations

from pathlib import Path

import typer

from aelab.cli._common import echo, user_errors


def cluster(
    features: Path = typer.Argument(
        ...,
        help="Feature matrix (n_samples, n_features): .npy, .npz or .csv, or a folder of "
        ".npy shards (clustered with Dask, never loaded whole).",
    ),
    k: int = typer.Option(..., "--k", min=1, help="Number of clusters."),
    alpha: str = typer.Option(
        "auto",
        "--alpha",
        help="Inverse temperature (> 0), or 'auto' (2 / mean squared distance to the mean).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed of the k-means++ starts."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for labels.csv, centroids.npy and summary.json (nothing is written without it).",
    ),
    key: str | None = typer.Option(
        None, "--key", help="Array name inside a .npz (default: its first array)."
    ),
    n_init: int = typer.Option(
        10, "--n-init", min=1, help="Starts; the lowest-objective one is kept."
    ),
    update: str = typer.Option(
        "damped",
        "--update",
        help="'damped' (converges) or 'fixed-point' (the paper's rule; may cycle).",
    ),
    max_iter: int = typer.Option(
        300, "--max-iter", min=1, help="Maximum passes over the data per start."
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="With a shard folder: a dask.distributed scheduler ADDRESS (tcp://host:8786) "
        "to run on, or 'local' for a local cluster of worker processes.",
    ),
) -> None:
    """Cluster feature vectors with Equilibrium K-Means and print the cluster sizes."""
    with user_errors():
        from aelab.clustering.run import parse_alpha, run_cluster

        if update not in ("damped", "fixed-point"):
            raise ValueError(f"--update {update!r}: choose 'damped' or 'fixed-point'")
        res = run_cluster(
            features, k, alpha=parse_alpha(alpha), seed=seed, out_dir=out, key=key,
            n_init=n_init, update=update, max_iter=max_iter, scheduler=scheduler,
        )  # fmt: skip
    s = res.summary
    n = s["n_samples"]
    echo(f"{n} samples x {s['n_features']} features, k={s['k']}, alpha={s['alpha']:.6g}")
    for i, size in enumerate(s["sizes"]):
        echo(f"cluster {i}: {size} ({100.0 * size / n:.1f}%)")
    state = "converged" if s["converged"] else "NOT converged"
    echo(f"objective {s['objective']:.6g}, {s['iterations']} iterations, {state}")
    for msg in s["warnings"]:
        typer.secho(f"warning: {msg}", err=True, fg=typer.colors.YELLOW)
    if out is not None:
        echo(f"wrote {', '.join(p.name for p in res.files)} to {out}")


def register(app: typer.Typer) -> None:
    app.command("cluster")(cluster)
