"""``aelab cluster``: Equilibrium K-Means on a feature file, with maps, alpha sweeps and ratio search."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from aelab.cli._common import SET_HELP, echo, settings, user_errors

if TYPE_CHECKING:
    from aelab.tasks import ClusterResult


def cluster(
    features: Path = typer.Argument(
        ...,
        help="Feature matrix (n_samples, n_features): .npy, .npz or .csv, or a folder of "
        ".npy shards (clustered with Dask, never loaded whole). "
        "An .npz from `aelab embed` gives its latents z and, when known, its labels.",
    ),
    k: int = typer.Option(..., "--k", min=1, help="Number of clusters."),
    alpha: str | None = typer.Option(
        None,
        "--alpha",
        help="Inverse temperature (> 0), or 'auto' (2 / mean squared distance to the mean; the default). "
        "Small alpha pulls centroids together; large alpha approaches hard k-means.",
    ),
    target_ratio: str | None = typer.Option(
        None,
        "--target-ratio",
        help="Search the alpha whose cluster sizes come closest to this ratio, e.g. 2:1:1, "
        "and use it (the candidates go to OUT/search.csv).",
    ),
    alpha_sweep: str | None = typer.Option(
        None,
        "--alpha-sweep",
        help="Also fit these alphas: multiples of the main alpha (0.1x,1x,10x) or absolute "
        "values (0.01,0.1). Table in OUT/sweep.csv; with --plot one panel per alpha.",
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Write a 2-D map (coloured by cluster, true classes as marker shapes, centroids "
        "as X, sizes in the legend) to this image file; with --alpha-sweep, the panels.",
    ),
    map_method: str | None = typer.Option(
        None,
        "--map",
        help="2-D map: tsne (openTSNE; default), umap (needs umap-learn) or pca (fast).",
    ),
    space: str | None = typer.Option(
        None,
        "--space",
        help="Cluster the features as they are (raw; default), L2-normalised (l2), PCA-reduced (pca), "
        "or both (l2-pca).",
    ),
    pca_dim: int | None = typer.Option(
        None, "--pca-dim", min=1, help="Dimensions kept by --space pca (default 32)."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Random seed of the k-means++ starts and the map (default 0)."
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for labels.csv, centroids.npy and summary.json (nothing is written without it).",
    ),
    key: str | None = typer.Option(
        None, "--key", help="Features array inside an .npz (default: z if present, else the first)."
    ),
    labels_key: str | None = typer.Option(
        None,
        "--labels-key",
        help="True-class array inside an .npz (default: labels if present; 'none' ignores them).",
    ),
    n_init: int | None = typer.Option(
        None,
        "--n-init",
        min=1,
        help="Starts; the lowest-objective one is kept (default 10, EquilibriumKMeans's).",
    ),
    update: str | None = typer.Option(
        None,
        "--update",
        help="'damped' (converges; the default) or 'fixed-point' (the paper's rule; may cycle).",
    ),
    max_iter: int | None = typer.Option(
        None, "--max-iter", min=1, help="Maximum passes over the data per start (default 300)."
    ),
    scheduler: str | None = typer.Option(
        None,
        "--scheduler",
        help="With a shard folder: a dask.distributed scheduler ADDRESS (tcp://host:8786) "
        "to run on, or 'local' for a local cluster of worker processes.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace earlier outputs in --out and --plot."
    ),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
) -> None:
    """Cluster feature vectors with Equilibrium K-Means and print the cluster sizes."""
    with user_errors():
        from aelab.data import parse_ratio
        from aelab.tasks import run_cluster

        given = settings({
            "k": k, "alpha": alpha, "sweep": alpha_sweep, "map": map_method, "space": space,
            "n_components": pca_dim, "seed": seed, "key": key, "labels_key": labels_key,
            "n_init": n_init, "update": update, "max_iter": max_iter,
            "target_ratio": None if target_ratio is None else parse_ratio(target_ratio),
        }, set_)  # fmt: skip
        res = run_cluster(
            features, out, plot=plot, scheduler=scheduler, overwrite=overwrite, **given
        )
    _print(res, target_ratio)


def _print(res: ClusterResult, target_ratio: str | None) -> None:
    """What the command prints: sizes, convergence, scores, the sweep, and each warning once."""
    n = res.n_samples
    echo(f"{n} samples x {res.n_features} features, k={res.k}, alpha={res.alpha:.6g}")
    if res.target_ratio is not None:
        sizes = ":".join(map(str, sorted(res.sizes, reverse=True)))
        echo(f"--target-ratio {target_ratio}: closest alpha {res.alpha:.6g} of {len(res.search)} "
             f"tried; sizes {sizes} (largest deviation from the ratio {100 * res.mismatch:.1f}%)")  # fmt: skip
    for i, size in enumerate(res.sizes):
        echo(f"cluster {i}: {size} ({100.0 * size / n:.1f}%)")
    state = "converged" if res.converged else "NOT converged"
    echo(f"objective {res.objective:.6g}, {res.iterations} iterations, {state}")
    s = res.scores
    if s is not None:
        echo(f"against the true classes: accuracy {s.acc:.4f}, NMI {s.nmi:.4f}, ARI {s.ari:.4f}")
    if res.sweep:
        echo("alpha sweep:")
        head = f"  {'alpha':>10}  {'factor':>7}  {'sizes':<24} {'iter':>5}  conv"
        echo(head + ("  acc     nmi     ari" if s is not None else ""))
        for r in res.sweep:
            line = (f"  {r.alpha:>10.4g}  {r.factor:>7.3g}  {':'.join(map(str, r.sizes)):<24} "
                    f"{r.n_iter:>5}  {'yes' if r.converged else 'NO '}")  # fmt: skip
            if r.scores is not None:
                line += f"  {r.scores.acc:.4f}  {r.scores.nmi:.4f}  {r.scores.ari:.4f}"
            echo(line)
    if res.messages:
        # One example and the count: a sweep of far-off alphas raises dozens.
        where = next((f"; all in {f}" for f in res.files if f.name == "warnings.txt"), "")
        typer.secho(f"warning: {res.messages[0]}", err=True, fg=typer.colors.YELLOW)
        typer.secho(f"({res.n_warnings} warning(s) in {res.n_fits} fit(s){where})", err=True,
                    fg=typer.colors.YELLOW)  # fmt: skip
    if res.files:
        echo(f"wrote {', '.join(str(p) for p in res.files)}")


def register(app: typer.Typer) -> None:
    app.command("cluster")(cluster)
