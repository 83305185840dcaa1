"""Using a trained checkpoint on new images: predict, evaluate, reconstruct."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aelab.files import write_csv
from aelab.tasks.modeling import open_checkpoint
from aelab.tasks.outputs import output_file
from aelab.tasks.results import Record
from aelab.tasks.source import DataArg

__all__ = [
    "EvaluateResult",
    "PredictResult",
    "ReconstructResult",
    "run_evaluate",
    "run_predict",
    "run_reconstruct",
]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class PredictResult(Record):
    """What :func:`run_predict` wrote.

    Attributes
    ----------
    path : Path
        The submission CSV (``id,label`` in input order; with ``probabilities``
        also ``p_<class>`` per class and ``margin``).
    n : int
        Rows written.
    counts : tuple of int
        Images predicted per class.
    class_names : tuple of str
        The checkpoint's classes (indices as text when it has no names).
    n_doubtful : int
        Images whose margin (top probability minus the second) is below
        :data:`DOUBTFUL_MARGIN`: the ones to review or label next.
    """

    path: Path
    n: int
    counts: tuple[int, ...]
    class_names: tuple[str, ...]
    n_doubtful: int = 0


#: A prediction whose two most probable classes are closer than this is counted as doubtful.
DOUBTFUL_MARGIN = 0.2


def _probability_rows(
    ids: list[str], labels: list[str], probs: np.ndarray
) -> tuple[list[list[object]], np.ndarray]:
    """Rows ``id, label, p_0 .. p_k-1, margin`` (probabilities to 6 decimals) and the margins."""
    top2 = np.sort(probs, axis=1)[:, ::-1][:, :2]
    margin = top2[:, 0] - (top2[:, 1] if probs.shape[1] > 1 else 0.0)
    rows = [
        [i, lab, *(f"{p:.6f}" for p in row), f"{m:.6f}"]
        for i, lab, row, m in zip(ids, labels, probs.tolist(), margin.tolist(), strict=True)
    ]
    return rows, margin


def _class_names(names: list[str] | None, k: int) -> tuple[str, ...]:
    return tuple(names[:k]) if names and len(names) >= k else tuple(str(i) for i in range(k))


def run_predict(
    data: DataArg,
    ckpt: PathLike,
    out: PathLike,
    *,
    batch_size: int = 256,
    device: str = "auto",
    overwrite: bool = False,
    probabilities: bool = False,
) -> PredictResult:
    """Predict every image of ``data`` with a fine-tuned checkpoint; write ``id,label`` to ``out``.

    Labels are the checkpoint's class names when it has them. ``out`` must not
    exist (unless ``overwrite``) and is never one of the inputs. With
    ``probabilities``, each row also holds every class's softmax probability
    (columns ``p_<class>``) and the margin between the two most probable
    classes, so doubtful images can be reviewed or labelled next.
    """
    from aelab.training import predict

    with output_file(out, "predict", inputs=[ckpt, data], overwrite=overwrite) as out:
        opened = open_checkpoint(ckpt, data, device=device)
        assert opened.data is not None
        pred, probs = predict(opened.model, opened.data, batch_size=batch_size, device=device)
        names = _class_names(opened.class_names, probs.shape[1])
        labels = [names[k] for k in pred.tolist()]
        margin = None
        if probabilities:
            rows, margin = _probability_rows(list(opened.data.ids), labels, probs)
            path = write_csv(out, ["id", "label", *(f"p_{n}" for n in names), "margin"], rows)
        else:
            path = write_csv(out, ["id", "label"], zip(opened.data.ids, labels, strict=True))
    counts = np.bincount(pred, minlength=probs.shape[1])
    doubtful = 0 if margin is None else int((margin < DOUBTFUL_MARGIN).sum())
    return PredictResult(
        path=path, n=len(pred), counts=tuple(int(c) for c in counts), class_names=names,
        n_doubtful=doubtful,
    )  # fmt: skip


@dataclass(frozen=True)
class EvaluateResult(Record):
    """Accuracy of a checkpoint on labelled images.

    Attributes
    ----------
    accuracy : float
    n_samples : int
    class_names : tuple of str
    per_class_accuracy : tuple of float or None
        ``None`` for a class without images.
    confusion_matrix : tuple of tuple of int
        Rows true, columns predicted.
    """

    accuracy: float
    n_samples: int
    class_names: tuple[str, ...]
    per_class_accuracy: tuple[float | None, ...]
    confusion_matrix: tuple[tuple[int, ...], ...]


def run_evaluate(
    data: DataArg,
    ckpt: PathLike,
    *,
    out: PathLike | None = None,
    device: str = "auto",
    overwrite: bool = False,
) -> EvaluateResult:
    """Accuracy, per-class accuracy and confusion matrix of a checkpoint on labelled ``data``.

    Every label must be one of the checkpoint's classes. With ``out`` the
    result is also written there as JSON.
    """
    from aelab.files import write_json

    if out is None:
        return _evaluate(data, ckpt, device)
    with output_file(out, "evaluate", inputs=[ckpt, data], overwrite=overwrite) as out:
        result = _evaluate(data, ckpt, device)
        write_json(out, result.to_json())
    return result


def _evaluate(data: DataArg, ckpt: PathLike, device: str) -> EvaluateResult:
    from aelab.training import evaluate

    opened = open_checkpoint(ckpt, data, device=device)
    ds = opened.data
    assert ds is not None
    if ds.labels is None:
        raise ValueError(
            "evaluation needs labeled data (class subfolders, labels in the .npz, or --labels)"
        )
    k = int(opened.model.config.num_classes)
    top = int(ds.labels.max())
    if top >= k:
        raise ValueError(
            f"label {top} is out of range for the checkpoint's {k} classes (0-{k - 1}); "
            "evaluate on data with the classes it was fine-tuned on"
        )
    res = evaluate(opened.model, ds, device=device)
    per_class = tuple(
        None if not np.isfinite(v) else float(v) for v in res["per_class_accuracy"][:k]
    )
    result = EvaluateResult(
        accuracy=float(res["accuracy"]), n_samples=int(res["n_samples"]),
        class_names=_class_names(opened.class_names or ds.class_names, k),
        per_class_accuracy=per_class,
        confusion_matrix=tuple(tuple(int(v) for v in row[:k]) for row in res["confusion_matrix"][:k]),
    )  # fmt: skip
    return result


@dataclass(frozen=True)
class ReconstructResult(Record):
    """The PNG grid of :func:`run_reconstruct` and each checkpoint's mean squared error."""

    path: Path
    n: int
    titles: tuple[str, ...]
    mse: tuple[float, ...]


def run_reconstruct(
    data: DataArg,
    ckpts: list[PathLike] | PathLike,
    out: PathLike,
    *,
    n: int = 16,
    seed: int = 0,
    device: str = "auto",
    titles: list[str] | None = None,
    overwrite: bool = False,
) -> ReconstructResult:
    """A PNG grid: ``n`` originals above their reconstructions by each checkpoint."""
    ckpts = [ckpts] if isinstance(ckpts, str | os.PathLike) else list(ckpts)
    if not ckpts:
        raise ValueError("give at least one checkpoint")
    if isinstance(n, bool) or n < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if titles is not None and len(titles) != len(ckpts):
        raise ValueError(f"{len(titles)} titles for {len(ckpts)} checkpoints")
    with output_file(out, "reconstruct", inputs=[*ckpts, data], overwrite=overwrite) as out:
        return _reconstruct(data, ckpts, out, n, seed, device, titles)


def _reconstruct(data: DataArg, ckpts: list[PathLike], out: Path, n: int, seed: int, device: str,
                 titles: list[str] | None) -> ReconstructResult:  # fmt: skip
    from aelab import viz
    from aelab.tasks.source import subsample
    from aelab.training import reconstruct

    first = open_checkpoint(ckpts[0], data, device=device)
    assert first.data is not None
    sample = subsample(first.data, n, seed, name="n")
    rows, mses = [sample.images.numpy()], []
    for i, ck in enumerate(ckpts):
        # Every checkpoint sees the same images: one of another shape is refused.
        model = first.model if i == 0 else open_checkpoint(ck, device=device).model
        r = reconstruct(model, sample.images, device=device)
        rows.append(np.asarray(r))
        mses.append(float((r - sample.images.float() / 255).square().mean()))
    names = tuple(titles or [Path(c).name for c in ckpts])
    fig = viz.image_grid(rows, row_titles=["original", *names], max_cols=len(sample))
    return ReconstructResult(
        path=viz.save_figure(fig, out), n=len(sample), titles=names, mse=tuple(mses)
    )
