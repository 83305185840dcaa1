"""The deep-clustering task: from a pre-trained checkpoint to a checkpoint whose latents cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aelab.deepcluster import DeepClusterConfig
from aelab.files import write_csv, write_records
from aelab.tasks.options import coerce, with_overrides
from aelab.tasks.outputs import check_name, output_folder
from aelab.tasks.results import Record, to_jsonable
from aelab.tasks.source import DataArg, sample_subset

__all__ = ["DeepClusterOptions", "DeepClusterRun", "RoundSummary", "run_deepcluster"]

PathLike = str | os.PathLike[str]
_FILES = ("model.safetensors", "labels.csv", "centroids.npy", "rounds.csv", "summary.json")


@dataclass
class DeepClusterOptions(DeepClusterConfig):
    """Settings of :func:`run_deepcluster`: :class:`~aelab.deepcluster.DeepClusterConfig` plus a subset.

    Parameters
    ----------
    classes : list of int or str, optional
        Use only these classes, relabelled 0..k-1.
    ratio : list of float, optional
        Their sizes in this ratio (needs ``classes``).
    n : int, optional
        Images in all (a seeded sample).
    """

    classes: list[int | str] | None = None
    ratio: list[float] | None = None
    n: int | None = None


@dataclass(frozen=True)
class RoundSummary(Record):
    """Cluster sizes, and agreement with the true classes when they are known."""

    sizes: tuple[int, ...]
    acc: float | None = None
    nmi: float | None = None
    ari: float | None = None

    @classmethod
    def of(cls, d: dict[str, Any]) -> RoundSummary:
        return cls(sizes=tuple(d["sizes"]), acc=d.get("acc"), nmi=d.get("nmi"), ari=d.get("ari"))


@dataclass(frozen=True)
class DeepClusterRun(Record):
    """What :func:`run_deepcluster` wrote.

    Attributes
    ----------
    run_dir : Path
        The folder: checkpoint (usable by ``aelab embed --ckpt``), ``labels.csv``,
        ``centroids.npy``, ``rounds.csv`` and ``summary.json``.
    n_images : int
    initial, final : RoundSummary
        The clustering of the pre-trained latents, and the final one.
    rounds : tuple of dict
        One row per round (see :class:`aelab.deepcluster.DeepClusterResult`).
    """

    run_dir: Path
    n_images: int
    initial: RoundSummary
    final: RoundSummary
    rounds: tuple[dict[str, Any], ...]


def run_deepcluster(
    data: DataArg,
    init: PathLike,
    out: PathLike,
    config: DeepClusterOptions | None = None,
    *,
    name: str | None = None,
    overwrite: bool = False,
    log: Any = None,
    **overrides: Any,
) -> DeepClusterRun:
    """Deep clustering from a pre-trained checkpoint into ``out/name``.

    Parameters
    ----------
    data : DataArg
        Images (brought to the checkpoint's shape); labels only score the rounds.
    init : path
        A pre-trained run folder.
    out : path
        Run folder; results go to ``out/name`` (default ``deepcluster-<method>``).
    config : DeepClusterOptions, optional
        The settings (``k`` at least); ``overrides`` change fields of it.
    name : str, optional
    overwrite : bool
        Replace an earlier run in ``out/name``.
    log : callable, optional
        Receives one line per round.

    Returns
    -------
    DeepClusterRun
    """
    if config is None:
        if overrides.get("k") is None:
            raise ValueError("k (the number of clusters) is required")
        config = DeepClusterOptions(k=coerce(overrides.pop("k"), int, "k"))
    opts = with_overrides(config, overrides)
    run_dir = Path(out) / (check_name(name) if name else f"deepcluster-{opts.method}")
    with output_folder(run_dir, "deepcluster", names=_FILES, inputs=[init, data],
                       overwrite=overwrite, option="--out/--name"):  # fmt: skip
        return _deepcluster(data, init, run_dir, opts, log)


def _deepcluster(data: DataArg, init: PathLike, run_dir: Path, opts: DeepClusterOptions,
                 log: Any) -> DeepClusterRun:  # fmt: skip
    from aelab.deepcluster import deep_cluster
    from aelab.files import write_json, write_npy
    from aelab.tasks.modeling import open_checkpoint
    from aelab.training import save_checkpoint

    opened = open_checkpoint(init, data, device=opts.device)
    ds, _ = sample_subset(
        opened.data, classes=opts.classes, ratio=opts.ratio, n=opts.n, seed=opts.seed
    )
    res = deep_cluster(opened.model, ds, opts, log=log)
    model = opened.model.cpu()
    save_checkpoint(run_dir, model, model_name=opened.model_name,
                    model_meta={"task": "deepcluster", "image_shape": list(ds.image_shape),
                                "class_names": opened.class_names})  # fmt: skip
    known = ds.labels is not None
    true = ds.labels.tolist() if known else [None] * len(ds)
    rows = ([i, c, *([ds.class_name(t)] if known else [])]
            for i, c, t in zip(ds.ids, res.labels.tolist(), true, strict=True))  # fmt: skip
    write_csv(run_dir / "labels.csv", ["id", "cluster", *(["label"] if known else [])], rows)
    write_npy(run_dir / "centroids.npy", res.centroids.astype(np.float32))
    write_records(run_dir / "rounds.csv", res.history)
    run = DeepClusterRun(
        run_dir=run_dir, n_images=len(ds), initial=RoundSummary.of(res.initial),
        final=RoundSummary.of(res.final), rounds=tuple(res.history),
    )  # fmt: skip
    extra = {"space": res.space.to_dict(), "init": str(init), "settings": to_jsonable(opts)}
    write_json(run_dir / "summary.json", {**run.to_json(), **extra})
    return run
