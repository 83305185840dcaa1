"""``aelab cluster``: Equilibrium K-Means on a feature file, with maps, alpha sweeps and ratio search."""

from __future__ import annotations

from pathlib import Path

import typer

from aelab.cli._common import echo, user_errors


def cluster(
    features: Path = typer.Argument(
        ...,
        help="Feature matrix (n_samples, n_features): .npy, .npz or .csv, or a folder of "
        ".npy shards (clustered with Dask, never loaded whole). "
        "An .npz from `aelab embed` gives its latents z and, when known, its labels.",
    ),
    k: int = typer.Option(..., "--k", min=1, help="Number of clusters."),
    alpha: str = typer.Option(
        "auto",
        "--alpha",
        help="Inverse temperature (> 0), or 'auto' (2 / mean squared distance to the mean). "
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
    map_method: str = typer.Option(
        "tsne", "--map", help="2-D map: tsne (openTSNE), umap (needs umap-learn) or pca (fast)."
    ),
    space: str = typer.Option(
        "raw",
        "--space",
        help="Cluster the features as they are (raw), L2-normalised (l2), PCA-reduced (pca), "
        "or both (l2-pca).",
    ),
    pca_dim: int = typer.Option(32, "--pca-dim", min=1, help="Dimensions kept by --space pca."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the k-means++ starts and the map."),
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
        from aelab.data import parse_ratio

        if update not in ("damped", "fixed-point"):
            raise ValueError(f"--update {update!r}: choose 'damped' or 'fixed-point'")
        ratio = None if target_ratio is None else parse_ratio(target_ratio)
        res = run_cluster(
            features, k, alpha=parse_alpha(alpha), seed=seed, out_dir=out, key=key,
            n_init=n_init, update=update, max_iter=max_iter, labels_key=labels_key,
            space=space, n_components=pca_dim, target_ratio=ratio, sweep=alpha_sweep,
            plot=plot, map_method=map_method, scheduler=scheduler,
        )  # fmt: skip
    s = res.summary
    n = s["n_samples"]
    echo(f"{n} samples x {s['n_features']} features, k={s['k']}, alpha={s['alpha']:.6g}")
    if ratio is not None:
        echo(
            f"--target-ratio {target_ratio}: closest alpha {s['alpha']:.6g} of {len(res.search)} "
            f"tried; sizes {':'.join(map(str, sorted(s['sizes'], reverse=True)))} "
            f"(largest deviation from the ratio {100 * s['mismatch']:.1f}%)"
        )
    for i, size in enumerate(s["sizes"]):
        echo(f"cluster {i}: {size} ({100.0 * size / n:.1f}%)")
    state = "converged" if s["converged"] else "NOT converged"
    echo(f"objective {s['objective']:.6g}, {s['iterations']} iterations, {state}")
    if "acc" in s:
        echo(
            f"against the true classes: accuracy {s['acc']:.4f}, NMI {s['nmi']:.4f}, ARI {s['ari']:.4f}"
        )
    if res.sweep:
        echo("alpha sweep:")
        head = f"  {'alpha':>10}  {'factor':>7}  {'sizes':<24} {'iter':>5}  conv"
        echo(head + ("  acc     nmi     ari" if "acc" in s else ""))
        for r in res.sweep:
            line = (
                f"  {r['alpha']:>10.4g}  {r['factor']:>7.3g}  {':'.join(map(str, r['sizes'])):<24} "
                f"{r['n_iter']:>5}  {'yes' if r['converged'] else 'NO '}"
            )
            if "acc" in r:
                line += f"  {r['acc']:.4f}  {r['nmi']:.4f}  {r['ari']:.4f}"
            echo(line)
    for msg in s["warnings"]:
        typer.secho(f"warning: {msg}", err=True, fg=typer.colors.YELLOW)
    if res.files:
        echo(f"wrote {', '.join(str(p) for p in res.files)}")


def register(app: typer.Typer) -> None:
    app.command("cluster")(cluster)
