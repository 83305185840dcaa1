"""The study report: every table and figure of STUDY.md, from one run's results.

Numbers in the page come from the run's step results; sentences that judge
them (overfitting, which alpha fits) are computed here from those numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from aelab.files import write_text
from aelab.report.html import Report

#: A run whose final train accuracy exceeds its validation accuracy by more
#: than this is called overfitting in the report.
OVERFIT_GAP = 0.15


def _png(out: Path, rel: str) -> bytes:
    return (out / rel).read_bytes()


def _ablation_sentence(rows: list[dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        tr, va = r.get("final_train_acc"), r.get("final_val_acc")
        if tr is None or va is None:
            continue
        gap = tr - va
        verdict = "overfits" if gap > OVERFIT_GAP else "does not overfit"
        parts.append(
            f"With augmentation '{r['preset']}', final train accuracy is {tr:.3f} and validation "
            f"accuracy {va:.3f} (gap {gap:+.3f}): the run {verdict} by the report's rule "
            f"(gap above {OVERFIT_GAP:.2f})."
        )
    return " ".join(parts)


def _anomaly_sentence(m: dict[str, Any]) -> str:
    n, a = m["mean_mse_normal"], m["mean_mse_anomalous"]
    if a > n:
        return (
            f"Anomalous images reconstruct {a / max(n, 1e-12):.1f} times worse: the model reconstructs what it "
            "has seen and turns other images into something like its own class."
        )
    return "Here anomalous images do not reconstruct worse than normal ones, so this score cannot separate them."


def _reconstruct_sentence(r: dict[str, Any]) -> str:
    pre, fin = r["mse_pretrained"], r["mse_finetuned"]
    if fin > pre:
        return (
            f"Fine-tuning for classification raised the error {fin / max(pre, 1e-12):.1f}-fold: the encoder now "
            "keeps what separates classes, not what the decoder needs to redraw the image."
        )
    return "Fine-tuning did not degrade the reconstructions here."


def _summary_rows(steps: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    test_acc = steps.get("predict", {}).get("test_accuracy", {})
    for k, v in steps.items():
        if k.startswith("finetune-"):
            rows.append({"question": f"accuracy with augmentation '{v['preset']}'",
                         "answer": f"val {v.get('best_val_acc') or 0:.4f}"
                         + (f", test {test_acc[v['preset']]:.4f}" if v["preset"] in test_acc else "")})  # fmt: skip
    if "cluster" in steps:
        c = steps["cluster"]
        mid = min(c["rows"], key=lambda r: abs(np.log(r["factor"])))
        rows.append({"question": f"EKM cluster sizes at alpha {mid['alpha']:.3g} (target {':'.join(map(str, c['class_sizes']))})",
                     "answer": ":".join(map(str, sorted(mid["sizes"], reverse=True)))})  # fmt: skip
    if "anomaly" in steps:
        m = steps["anomaly"]["metrics"]
        rows.append({"question": "anomaly ROC AUC / mean MSE normal vs anomalous",
                     "answer": f"{m['roc_auc']:.4f} / {m['mean_mse_normal']:.4f} vs {m['mean_mse_anomalous']:.4f}"})  # fmt: skip
    return rows


def _section_model(rep: Report, model: Any, data: dict[str, Any]) -> None:
    from aelab.viz import layer_table

    rows = layer_table(model)
    total = sum(r["params"] for r in rows)
    rep.section("The model")
    c = model.config
    rep.paragraph(
        f"Registered model '{data['model']}': input {c.in_channels}x{c.image_size}x{c.image_size}, "
        f"latent {c.latent_dim}, {c.num_classes} classes, {total:,} parameters. "
        "forward(x) returns (reconstruction, logits, z)."
    )
    rep.table(
        [
            {
                "layer": r["name"],
                "type": r["type"],
                "output shape": "x".join(map(str, r["output_shape"])),
                "parameters": r["params"],
            }
            for r in rows
        ],  # fmt: skip
        ["layer", "type", "output shape", "parameters"],
        table_id="model-table",
    )


def _section_ablation(rep: Report, steps: dict[str, Any], out: Path) -> None:
    from aelab import viz

    rep.section("Pre-training and the augmentation ablation")
    pre = steps["pretrain"]
    rep.paragraph(
        f"Pre-training on {pre['n_train']} unlabeled images for {len(pre['history'])} epochs: "
        f"final reconstruction loss {pre['train_loss']:.5f} (train)"
        + (f", {pre['val_loss']:.5f} (validation)." if pre.get("val_loss") is not None else ".")
    )
    runs = [v for k, v in steps.items() if k.startswith("finetune-")]
    test_acc = steps.get("predict", {}).get("test_accuracy", {})
    rows = [
        {"augmentation": r["preset"], "labeled": r["splits"]["labeled"], "epochs": len(r["history"]),
         "final train acc": r.get("final_train_acc"), "final val acc": r.get("final_val_acc"),
         "best val acc": r.get("best_val_acc"), "test acc": test_acc.get(r["preset"])}
        for r in runs
    ]  # fmt: skip
    rep.table(rows, ["augmentation", "labeled", "epochs", "final train acc", "final val acc", "best val acc", "test acc"],
              table_id="ablation-table")  # fmt: skip
    sentence = _ablation_sentence(runs)
    if sentence:
        rep.paragraph(sentence, note=True)
    fig = viz.training_curves({r["preset"]: r["history"] for r in runs}, metrics=("loss", "acc"))
    rep.figure(
        viz.figure_to_png_bytes(fig),
        "Fine-tuning curves: train (solid) and validation (dashed), one colour per run.",
    )
    pred = steps.get("predict", {})
    if pred.get("path"):
        rep.paragraph(
            f"Predictions of the best run ('{pred['best_run']}', by validation accuracy) on {pred['n']} test images "
            f"were written to submission.csv (id,label)."
        )


def _section_cluster(rep: Report, c: dict[str, Any], out: Path) -> None:
    rep.section("Equilibrium K-Means on the latent vectors")
    sizes = ":".join(map(str, c["class_sizes"]))
    rep.paragraph(
        f"{sum(c['class_sizes'])} images of classes {', '.join(c['classes'])} in the ratio {sizes}, encoded by "
        f"{Path(c['encoder']).name}, clustered with EKM (k={len(c['classes'])}). "
        + (f"The alpha whose cluster sizes best match the ratio is {c['base_alpha']:.4g} "
           f"(searched over {len(c['search'])} values)." if c["search"] else f"Base alpha {c['base_alpha']:.4g} ({c['alpha_mode']}).")
    )  # fmt: skip
    rep.table(
        [
            {
                "alpha": r["alpha"],
                "x base": r["factor"],
                "sizes": ":".join(map(str, r["sizes"])),
                "ARI": r.get("ari"),
                "NMI": r.get("nmi"),
                "iterations": r["n_iter"],
                "converged": r["converged"],
            }
            for r in c["rows"]
        ],  # fmt: skip
        ["alpha", "x base", "sizes", "ARI", "NMI", "iterations", "converged"],
        table_id="ekm-table",
    )
    rep.paragraph(
        "What alpha does: it is an inverse temperature on squared distances. Small alpha softens every "
        "membership and pulls all centroids towards the global mean (they collapse together); large alpha "
        "approaches hard K-means, which tends to split the big class and merge the small ones (the uniform "
        "effect). aelab computes the weights with shifted exponents, so no alpha produces NaN."
    )
    rep.figure(
        _png(out, c["figure"]),
        "t-SNE map of the latents, coloured by EKM cluster, centroids marked (X), true classes as marker shapes; one panel per alpha.",
    )


def _section_anomaly(rep: Report, a: dict[str, Any], out: Path) -> None:
    m = a["metrics"]
    rep.section("Anomaly detection by reconstruction error")
    rep.paragraph(
        f"An autoencoder trained on {a['n_train']} images of class '{a['normal_class']}' only; anomalies: "
        f"{a['anomalies']}. Mean reconstruction loss (MSE): normal {m['mean_mse_normal']:.4f}, anomalous "
        f"{m['mean_mse_anomalous']:.4f}. " + _anomaly_sentence(m)
    )
    rep.table(
        [
            {
                "score": m["score"],
                "ROC AUC": m["roc_auc"],
                "average precision": m["average_precision"],
                "F1": m["f1"],
                "FPR at threshold": m["fpr"],
                "TPR at threshold": m["tpr"],
                "threshold": m["threshold"],
                "rule": a["threshold_rule"],
                "normal": m["n_normal"],
                "anomalous": m["n_anomalous"],
            }
        ],  # fmt: skip
        [
            "score",
            "ROC AUC",
            "average precision",
            "F1",
            "FPR at threshold",
            "TPR at threshold",
            "threshold",
            "rule",
            "normal",
            "anomalous",
        ],
        table_id="anomaly-table",
    )
    caps = {
        "roc": "ROC curve.",
        "histogram": "Scores of normal and anomalous images, with the threshold.",
        "most_anomalous": "Most anomalous images: image, reconstruction, error map.",
        "least_anomalous": "Least anomalous images: image, reconstruction, error map.",
    }
    for name, rel in a["figures"].items():
        rep.figure(_png(out, rel), caps.get(name, name))


def _section_reconstruct(rep: Report, r: dict[str, Any], out: Path) -> None:
    rep.section("Reconstructions before and after fine-tuning")
    rep.paragraph(
        f"Mean squared error on these {r['n']} images: pre-trained {r['mse_pretrained']:.5f}, fine-tuned "
        f"{r['mse_finetuned']:.5f}. " + _reconstruct_sentence(r)
    )
    rep.figure(
        _png(out, r["figure"]), "Originals (top), pre-trained and fine-tuned reconstructions."
    )


def _section_environment(rep: Report, results: dict[str, Any]) -> None:
    from aelab.study.config import dump_config

    rep.section("Environment and timing")
    env = results["environment"]
    rep.table(
        [{"item": k, "value": v} for k, v in env.items()], ["item", "value"], table_id="env-table"
    )
    rep.table(
        [
            {"step": k, "wall time (s)": v, "reused": k in results["reused"]}
            for k, v in results["wall_s"].items()
        ]
        + [
            {
                "step": "total (this invocation)",
                "wall time (s)": results["total_wall_s"],
                "reused": "",
            }
        ],
        ["step", "wall time (s)", "reused"],
        table_id="time-table",
    )
    rep.paragraph(f"Seed {results['config']['seed']}. The configuration this run used:")
    rep.code(dump_config(results["config"]))


def build_report(results: dict[str, Any], out: str | Path, *, model: Any) -> Path:
    """Write ``out/report.html`` from a study's results; return its path."""
    out = Path(out)
    steps = results["steps"]
    d = results["data"]
    rep = Report("aelab study report")
    rep.section("Summary")
    rep.paragraph(
        f"Data: {d['source']} ({d['n_source']} images of shape {'x'.join(map(str, d['image_shape']))}, "
        f"{len(d['class_names'] or [])} classes; labeled {d['splits']['labeled']}, validation {d['splits']['val']}, "
        f"test {d['n_test']}). Device: {results['environment']['device']}."
    )
    rep.table(_summary_rows(steps), ["question", "answer"], table_id="summary-table")
    _section_model(rep, model, d)
    _section_ablation(rep, steps, out)
    if "cluster" in steps:
        _section_cluster(rep, steps["cluster"], out)
    if "anomaly" in steps:
        _section_anomaly(rep, steps["anomaly"], out)
    if "reconstruct" in steps:
        _section_reconstruct(rep, steps["reconstruct"], out)
    _section_environment(rep, results)
    return write_text(out / "report.html", rep.render())
