"""The study report: every table and figure of docs/study.md, from one run's :class:`StudyResults`.

Numbers in the page come from the run's typed results; sentences that judge
them (overfitting, which alpha fits) are computed here from those numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aelab.files import write_text
from aelab.report.html import Report
from aelab.study.results import AnomalyStep, ClusterStep, StudyResults
from aelab.tasks import FinetuneResult, ReconstructResult

__all__ = ["OVERFIT_GAP", "build_report", "write_report"]

#: A run whose final train accuracy exceeds its validation accuracy by more
#: than this is called overfitting in the report.
OVERFIT_GAP = 0.15


def _ablation_sentence(runs: tuple[FinetuneResult, ...]) -> str:
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
    return " ".join(parts)


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


def _middle(c: ClusterStep) -> Any:
    """The sweep's row closest to the chosen alpha (factor 1), or the main fit."""
    rows = c.result.sweep
    if not rows:
        return c.result
    return min(rows, key=lambda r: abs(np.log(r.factor or 1.0)))


def _summary_rows(res: StudyResults) -> list[dict[str, Any]]:
    acc = res.predict.test_accuracy
    rows: list[dict[str, Any]] = []
    for r in res.finetunes:
        test = f", test {acc[r.augment]:.4f}" if r.augment in acc else ""
        rows.append({"question": f"accuracy with augmentation '{r.augment}'",
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
    rep.section("Pre-training and the augmentation ablation")
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
    rows = [dict(zip(cols, (r.augment, r.splits.labeled, len(r.history), r.final_train_acc,
                            r.final_val_acc, r.best_val_acc, acc.get(r.augment)), strict=True))
            for r in res.finetunes]  # fmt: skip
    rep.table(rows, cols, table_id="ablation-table")
    sentence = _ablation_sentence(res.finetunes)
    if sentence:
        rep.paragraph(sentence, note=True)
    curves = viz.training_curves(
        {r.augment: list(r.history) for r in res.finetunes}, metrics=("loss", "acc")
    )
    rep.figure(viz.figure_to_png_bytes(curves),
               "Fine-tuning curves: train (solid) and validation (dashed), one colour per run.")  # fmt: skip
    p = res.predict
    rep.paragraph(
        f"Predictions of the best run ('{p.best_run}', by validation accuracy) on "
        f"{p.prediction.n} test images ({res.data.test}) were written to submission.csv (id,label)."
    )


def _section_cluster(rep: Report, c: ClusterStep) -> None:
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
        rep.paragraph(
            f"{r.n_warnings} of the fits warned ({'; '.join(r.messages)}): far-off alphas leave "
            "clusters empty, and EKM moves such a centroid to a data point instead of producing NaN.",
            note=True,
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
    for name, path in a.evaluation.figures.items():
        rep.figure(Path(path).read_bytes(), _ANOMALY_CAPTIONS.get(name, name))


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


def build_report(res: StudyResults, model: Any) -> str:
    """The report page of a study's results as one HTML string (``model``: the study's architecture)."""
    d = res.data
    rep = Report("aelab study report")
    rep.section("Summary")
    rep.paragraph(
        f"Data: {d.source} ({d.n_source} images of shape {'x'.join(map(str, d.image_shape))}, "
        f"{len(d.class_names)} classes; labeled {d.splits.labeled}, validation {d.splits.val}, "
        f"test {d.n_test} from {d.test}). Device: {res.environment['device']}."
    )
    rep.table(_summary_rows(res), ["question", "answer"], table_id="summary-table")
    _section_model(rep, model, d.model)
    _section_ablation(rep, res)
    _section_cluster(rep, res.cluster)
    _section_anomaly(rep, res.anomaly)
    _section_reconstruct(rep, res.reconstruct)
    _section_environment(rep, res)
    return rep.render()


def write_report(res: StudyResults, out: str | Path) -> Path:
    """Write ``out/report.html`` for a study's results; return its path."""
    from aelab.training import load_model

    model, _ = load_model(res.finetunes[0].run_dir if res.finetunes else res.pretrain.run_dir)
    return write_text(Path(out) / "report.html", build_report(res, model))
