"""The study report: every table and figure of docs/study.md, from one run's :class:`StudyResults`.

Numbers in the page come from the run's typed results; sentences that judge
them (overfitting, which alpha fits) are computed here from those numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from aelab.files import write_text
from aelab.report.html import Report
from aelab.study.results import AnomalyStep, ClusterStep, StudyResults
from aelab.tasks import ClusterResult, FinetuneResult, ReconstructResult

__all__ = ["OVERFIT_GAP", "build_report", "write_report"]

#: A run whose final train accuracy exceeds its validation accuracy by more
#: than this is called overfitting in the report.
OVERFIT_GAP = 0.15

#: Longest example warning quoted in the report; the run's file holds them all.
EXAMPLE_CHARS = 240


def _ablation_sentences(runs: tuple[FinetuneResult, ...]) -> list[str]:
    """One sentence a run (its own paragraph, so that a long ablation stays readable)."""
    parts = []
    for r in runs:
        tr, va = r.final_train_acc, r.final_val_acc
        if tr is None or va is None:
            continue
        gap = tr - va
        verdict = "overfits" if gap > OVERFIT_GAP else "does not overfit"
        parts.append(
            f"With augmentation '{r.augment}', final train accuracy is {tr:.3f} and validation "
            f"accuracy {va:.3f} (gap {gap:+.3f}): the run {verdict} by the report's rule "
            f"(gap above {OVERFIT_GAP:.2f})."
        )
    return parts


def _anomaly_sentence(normal: float, anomalous: float) -> str:
    if anomalous > normal:
        return (
            f"Anomalous images reconstruct {anomalous / max(normal, 1e-12):.1f} times worse: the model "
            "reconstructs what it has seen and turns other images into something like its own class."
        )
    return "Here anomalous images do not reconstruct worse than normal ones, so this score cannot separate them."


def _reconstruct_sentence(pre: float, fin: float) -> str:
    if fin > pre:
        return (
            f"Fine-tuning for classification raised the error {fin / max(pre, 1e-12):.1f}-fold: the "
            "encoder now keeps what separates classes, not what the decoder needs to redraw the image."
        )
    return "Fine-tuning did not degrade the reconstructions here."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "\u2026"


def _fits_phrase(r: ClusterResult) -> str:
    """``in 25 fits (21 of the alpha search, the main fit, 3 of the sweep)``; empty if not recorded."""
    if not r.n_fits:
        return ""
    parts = [f"{len(r.search)} of the alpha search"] if r.search else []
    parts.append("the main fit")
    parts += [f"{len(r.sweep)} of the sweep"] if r.sweep else []
    return f" in {_plural(r.n_fits, 'fit')} ({', '.join(parts)})"


def _file_link(r: ClusterResult, name: str, base: Path | None) -> tuple[str, str] | None:
    """A link to the run's file ``name`` among ``r.files``, relative to the report's folder."""
    path = next((Path(f) for f in r.files if Path(f).name == name), None)
    if path is None:
        return None
    href = os.path.relpath(path, base) if base is not None else path.name
    href = Path(href).as_posix()
    return href, href


def _middle(c: ClusterStep) -> Any:
    """The sweep's row closest to the chosen alpha (factor 1), or the main fit."""
    rows = c.result.sweep
    if not rows:
        return c.result
    return min(rows, key=lambda r: abs(np.log(r.factor or 1.0)))


#: The key of the default-recipe run in ``PredictStep`` (see :mod:`aelab.study.run`).
DEFAULT_RUN = "default"


def _runs(res: StudyResults) -> list[tuple[str, str, FinetuneResult]]:
    """(key in the test accuracies, label in the report, result) of every fine-tuning run."""
    runs = [(r.augment, f"augmentation '{r.augment}'", r) for r in res.finetunes]
    if res.default_run is not None:
        label = "the default recipe" + (" (shortened)" if res.default_shortened else "")
        runs.append((DEFAULT_RUN, label, res.default_run))
    return runs


def _summary_rows(res: StudyResults) -> list[dict[str, Any]]:
    acc = res.predict.test_accuracy
    rows: list[dict[str, Any]] = []
    for key, label, r in _runs(res):
        test = f", test {acc[key]:.4f}" if key in acc else ""
        rows.append({"question": f"accuracy with {label}",
                     "answer": f"val {r.best_val_acc or 0:.4f}{test}"})  # fmt: skip
    mid = _middle(res.cluster)
    target = ":".join(map(str, res.cluster.class_sizes))
    rows.append({"question": f"EKM cluster sizes at alpha {mid.alpha:.3g} (target {target})",
                 "answer": ":".join(map(str, sorted(mid.sizes, reverse=True)))})  # fmt: skip
    m = res.anomaly.evaluation.metrics
    rows.append({"question": "anomaly ROC AUC / mean MSE normal vs anomalous",
                 "answer": f"{m.roc_auc:.4f} / {m.mean_mse_normal:.4f} vs {m.mean_mse_anomalous:.4f}"})  # fmt: skip
    return rows


def _section_model(rep: Report, model: Any, name: str) -> None:
    from aelab.viz import layer_table

    rows = layer_table(model)
    total = sum(r["params"] for r in rows)
    c = model.config
    rep.section("The model")
    rep.paragraph(
        f"Registered model '{name}': input {c.in_channels}x{c.image_size}x{c.image_size}, "
        f"latent {c.latent_dim}, {c.num_classes} classes, {total:,} parameters. "
        "forward(x) returns (reconstruction, logits, z)."
    )
    table = [{"layer": r["name"], "type": r["type"], "output shape": "x".join(map(str, r["output_shape"])),
              "parameters": r["params"]} for r in rows]  # fmt: skip
    rep.table(table, ["layer", "type", "output shape", "parameters"], table_id="model-table")


def _section_ablation(rep: Report, res: StudyResults) -> None:
    from aelab import viz

    pre = res.pretrain
    rep.section("Pre-training and the augmentation ablation"
                + (", and the default recipe" if res.default_run is not None else ""))  # fmt: skip
    val = f", {pre.val_loss:.5f} (validation)." if pre.val_loss is not None else "."
    rep.paragraph(
        f"Pre-training on {pre.n_train} unlabeled images for {len(pre.history)} epochs: "
        f"final reconstruction loss {pre.train_loss:.5f} (train){val}"
    )
    acc = res.predict.test_accuracy
    cols = [
        "augmentation",
        "labeled",
        "epochs",
        "final train acc",
        "final val acc",
        "best val acc",
        "test acc",
    ]
    runs = _runs(res)
    names = {key: r.augment if key != DEFAULT_RUN else f"default recipe ({r.augment})"
             for key, _, r in runs}  # fmt: skip
    rows = [dict(zip(cols, (names[key], r.splits.labeled, len(r.history), r.final_train_acc,
                            r.final_val_acc, r.best_val_acc, acc.get(key)), strict=True))
            for key, _, r in runs]  # fmt: skip
    rep.table(rows, cols, table_id="ablation-table")
    for sentence in _ablation_sentences(res.finetunes):
        rep.paragraph(sentence, note=True)
    curves = viz.training_curves(
        {names[key]: list(r.history) for key, _, r in runs}, metrics=("loss", "acc")
    )
    rep.figure(viz.figure_to_png_bytes(curves),
               "Fine-tuning curves: train (solid) and validation (dashed), one colour per run.")  # fmt: skip
    p = res.predict
    if p.best_run == DEFAULT_RUN:
        who = ("the run of the default recipe (FixMatch on the unlabeled images, from the same "
               "pre-trained encoder; [finetune] submit = \"default\")")  # fmt: skip
    else:
        who = f"the best ablation run ('{p.best_run}', by validation accuracy)"
    rep.paragraph(
        f"Predictions of {who} on {p.prediction.n} test images ({res.data.test}) were written "
        "to submission.csv (id,label); the cluster and reconstruction steps use its encoder."
    )
    if res.default_run is not None and res.default_shortened:
        rep.paragraph(
            f"The default-recipe run was shortened ({res.default_shortened}; --quick does "
            "this): its numbers preview the recipe, they are not what it reaches.",
            note=True,
        )


def _section_cluster(rep: Report, c: ClusterStep, base: Path | None = None) -> None:
    r = c.result
    rep.section("Equilibrium K-Means on the latent vectors")
    how = (f"The alpha whose cluster sizes best match the ratio is {r.alpha:.4g} (searched over "
           f"{len(r.search)} values)." if r.search else f"Alpha {r.alpha:.4g} ({r.alpha_setting}).")  # fmt: skip
    rep.paragraph(
        f"{sum(c.class_sizes)} images of classes {', '.join(c.classes)} in the ratio "
        f"{':'.join(map(str, c.class_sizes))}, encoded by {c.encoder}, clustered with EKM "
        f"(k={r.k}). " + how
    )
    rows = [{"alpha": s.alpha, "x chosen": s.factor, "sizes": ":".join(map(str, s.sizes)),
             "ARI": s.scores and s.scores.ari, "NMI": s.scores and s.scores.nmi,
             "iterations": s.n_iter, "converged": s.converged} for s in r.sweep]  # fmt: skip
    rep.table(
        rows,
        ["alpha", "x chosen", "sizes", "ARI", "NMI", "iterations", "converged"],
        table_id="ekm-table",
    )
    if r.n_warnings:
        example = _shorten(r.messages[0], EXAMPLE_CHARS) if r.messages else ""
        if example:
            stop = "" if example.endswith((".", "\u2026")) else "."
            example = f" For example: {example}{stop}"
        link = _file_link(r, "warnings.txt", base)
        rep.paragraph(
            f"{_plural(r.n_warnings, 'warning')}{_fits_phrase(r)}, "
            f"{_plural(len(r.messages), 'distinct message')}: far-off alphas leave clusters "
            "empty, and EKM moves such a centroid to a data point instead of producing NaN."
            + example
            + (" Every warning:" if link else ""),
            note=True,
            link=link,
        )
    rep.paragraph(
        "What alpha does: it is an inverse temperature on squared distances. Small alpha softens every "
        "membership and pulls all centroids towards the global mean (they collapse together); large alpha "
        "approaches hard K-means, which tends to split the big class and merge the small ones (the uniform "
        "effect). aelab computes the weights with shifted exponents, so no alpha produces NaN."
    )
    rep.figure(c.figure.read_bytes(), "2-D map of the latents, coloured by EKM cluster, centroids marked (X), "
               "true classes as marker shapes; one panel per alpha.")  # fmt: skip


_ANOMALY_CAPTIONS = {
    "roc": "ROC curve.",
    "histogram": "Scores of normal and anomalous images, with the threshold.",
    "most_anomalous": "Most anomalous images: image, reconstruction, error map.",
    "least_anomalous": "Least anomalous images: image, reconstruction, error map.",
}


def _section_anomaly(rep: Report, a: AnomalyStep) -> None:
    m = a.evaluation.metrics
    rep.section("Anomaly detection by reconstruction error")
    rep.paragraph(
        f"An autoencoder trained on {a.fit.n_train} images of class '{a.normal_class}' only "
        f"(none of them among the images scored here); anomalies: {a.anomalies}. Mean reconstruction "
        f"loss (MSE): normal {m.mean_mse_normal:.4f}, anomalous {m.mean_mse_anomalous:.4f}. "
        + _anomaly_sentence(m.mean_mse_normal, m.mean_mse_anomalous)
    )
    row = {"score": m.score, "ROC AUC": m.roc_auc, "average precision": m.average_precision,
           "F1": m.f1, "FPR at threshold": m.fpr, "TPR at threshold": m.tpr,
           "threshold": m.threshold, "rule": a.fit.rule, "normal": m.n_normal, "anomalous": m.n_anomalous}  # fmt: skip
    rep.table([row], list(row), table_id="anomaly-table")
    _threshold_paragraphs(rep, a)
    for name, path in a.evaluation.figures.items():
        rep.figure(Path(path).read_bytes(), _ANOMALY_CAPTIONS.get(name, name))


def _threshold_paragraphs(rep: Report, a: AnomalyStep) -> None:
    """How many held-out normals set the threshold, and the false-positive rate it reached."""
    fit, m = a.fit, a.evaluation.metrics
    if not fit.n_calibration:  # a record written before the calibration size was kept
        return
    flagged = round(m.fpr * m.n_normal)
    if fit.target_fpr is not None:
        how = (f"was set on {fit.n_calibration} held-out normal images, none of them trained on, "
               f"for a target false-positive rate of {fit.target_fpr:g}")  # fmt: skip
    else:  # contamination or a fixed score: the held-out images only scale combined scores
        how = f"needs no held-out images ({fit.n_calibration} scaled the scores)"
    rep.paragraph(
        f"The threshold ({fit.rule}) {how}. On the {m.n_normal} normal test images it reached a "
        f"false-positive rate of {m.fpr:.3g} ({flagged} of {m.n_normal} flagged) and a "
        f"true-positive rate of {m.tpr:.3g} on the {m.n_anomalous} anomalies."
    )
    if fit.calibration_note:
        rep.paragraph(f"Calibration: {fit.calibration_note}.", note=True)


def _section_reconstruct(rep: Report, r: ReconstructResult) -> None:
    rep.section("Reconstructions before and after fine-tuning")
    pre, fin = r.mse[0], r.mse[-1]
    rep.paragraph(
        f"Mean squared error on these {r.n} images: {r.titles[0]} {pre:.5f}, {r.titles[-1]} "
        f"{fin:.5f}. " + _reconstruct_sentence(pre, fin)
    )
    rep.figure(r.path.read_bytes(), "Originals (top), pre-trained and fine-tuned reconstructions.")


def _section_environment(rep: Report, res: StudyResults) -> None:
    rep.section("Environment and timing")
    rep.table([{"item": k, "value": v} for k, v in res.environment.items()], ["item", "value"],
              table_id="env-table")  # fmt: skip
    rows = [{"step": t.step, "wall time (s)": t.wall_s, "reused": t.reused} for t in res.timings]
    rows.append(
        {"step": "total (this invocation)", "wall time (s)": res.total_wall_s, "reused": ""}
    )
    rep.table(rows, ["step", "wall time (s)", "reused"], table_id="time-table")
    rep.paragraph(f"Seed {res.seed}. The configuration this run used:")
    rep.code(res.config_toml)


def build_report(res: StudyResults, model: Any, base: Path | None = None) -> str:
    """The report page of a study's results as one HTML string.

    ``model`` is the study's architecture; ``base`` the folder the page is
    written to, which links to the run's files are relative to.
    """
    d = res.data
    rep = Report("aelab study report")
    rep.section("Summary")
    rep.paragraph(
        f"Data: {d.source} ({d.n_source} images of shape {'x'.join(map(str, d.image_shape))}, "
        f"{len(d.class_names)} classes; labeled {d.splits.labeled}, validation {d.splits.val}, "
        f"test {d.n_test} from {d.test})"
        + (f", and {d.n_unlabeled} unlabeled images from {d.unlabeled}" if d.unlabeled else "")
        + f". Device: {res.environment['device']}."
    )
    rep.table(_summary_rows(res), ["question", "answer"], table_id="summary-table")
    _section_model(rep, model, d.model)
    _section_ablation(rep, res)
    _section_cluster(rep, res.cluster, base)
    _section_anomaly(rep, res.anomaly)
    _section_reconstruct(rep, res.reconstruct)
    _section_environment(rep, res)
    return rep.render()


def write_report(res: StudyResults, out: str | Path) -> Path:
    """Write ``out/report.html`` for a study's results; return its path."""
    from aelab.training import load_model

    model, _ = load_model(res.finetunes[0].run_dir if res.finetunes else res.pretrain.run_dir)
    return write_text(Path(out) / "report.html", build_report(res, model, Path(out)))
