"""``aelab cluster``: Equilibrium K-Means on a feature file, with maps, alpha sweeps and ratio search."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from aelab.cli._common import echo, user_errors
from aelab.cli._settings import CONFIG_HELP, SET_HELP, Listing, gather, settings_command

if TYPE_CHECKING:
    from aelab.tasks import ClusterResult


def _listing() -> Listing:
    from aelab.clustering import EquilibriumKMeans
    from aelab.tasks import ClusterOptions

    return Listing(ClusterOptions, docs=(EquilibriumKMeans,))


def _ratio(text: str) -> Any:
    from aelab.data import parse_ratio

    return parse_ratio(text)


#: Old flags whose setting has another name or form: parameter -> (key, value).
_CONVERT: dict[str, Any] = {
    "target_ratio": lambda v: ("target_ratio", _ratio(v)),
    "alpha_sweep": lambda v: ("sweep", v),
    "map_method": lambda v: ("map", v),
    "pca_dim": lambda v: ("n_components", v),
}


def _old(flag: str) -> Any:
    return typer.Option(None, flag, hidden=True)


def cluster(
    ctx: typer.Context,
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
        help="Inverse temperature (> 0), or 'auto' (2 / mean squared distance to the mean; "
        "the default). Small alpha pulls centroids together; large alpha approaches hard "
        "k-means. Compare alphas with --set sweep=0.1x,1x,10x.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Folder for labels.csv, centroids.npy and summary.json (nothing is written without it).",
    ),
    plot: Path | None = typer.Option(
        None,
        "--plot",
        help="Write a 2-D map (coloured by cluster, true classes as marker shapes, centroids "
        "as X, sizes in the legend) to this image file; with a sweep, one panel per alpha.",
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
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    target_ratio: str | None = _old("--target-ratio"),
    alpha_sweep: str | None = _old("--alpha-sweep"),
    map_method: str | None = _old("--map"),
    space: str | None = _old("--space"),
    pca_dim: int | None = _old("--pca-dim"),
    seed: int | None = _old("--seed"),
    key: str | None = _old("--key"),
    labels_key: str | None = _old("--labels-key"),
    n_init: int | None = _old("--n-init"),
    update: str | None = _old("--update"),
    max_iter: int | None = _old("--max-iter"),
) -> None:
    """Cluster feature vectors with Equilibrium K-Means and print the cluster sizes."""
    with user_errors():
        from aelab.tasks import run_cluster

        given = gather(ctx, _listing(), {"k": k, "alpha": alpha}, set_, config, _CONVERT)
        res = run_cluster(
            features, out, plot=plot, scheduler=scheduler, overwrite=overwrite, **given
        )
    _print(res)


def _print(res: ClusterResult) -> None:
    """What the command prints: sizes, convergence, scores, the sweep, and each warning once."""
    n = res.n_samples
    echo(f"{n} samples x {res.n_features} features, k={res.k}, alpha={res.alpha:.6g}")
    if res.target_ratio is not None:
        sizes = ":".join(map(str, sorted(res.sizes, reverse=True)))
        ratio = ":".join(f"{r:g}" for r in res.target_ratio)
        echo(f"target_ratio {ratio}: closest alpha {res.alpha:.6g} of {len(res.search)} "
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
    app.command("cluster", cls=settings_command(_listing))(cluster)
