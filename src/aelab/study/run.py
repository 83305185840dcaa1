"""``aelab study``: the whole study of STUDY.md, step by step, into one run folder.

Steps, in order: pre-training; fine-tuning once per augmentation preset (the
ablation); prediction to ``submission.csv``; EKM on a 2:1:1 three-class subset
at the best-fitting alpha and its multiples; anomaly detection with one class
as normal; reconstructions before and after fine-tuning; the HTML report.
Every step records its result in ``steps/``; ``resume=True`` reuses finished steps.
"""

from __future__ import annotations

import csv
import io
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from aelab.files import write_text
from aelab.data.dataset import ImageDataset
from aelab.study.config import dump_config
from aelab.study.steps import StepRunner

FIGURES = "figures"


def _subsample(ds: ImageDataset, n: int, seed: int) -> ImageDataset:
    if n and len(ds) > n:
        return ds.subset(
            np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False))
        )
    return ds


def _jsonable(d: dict[str, Any], drop: tuple[str, ...] = ("model", "detector")) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in drop}


class _Study:
    """Holds the loaded data and paths shared by the steps of one study run."""

    def __init__(
        self, cfg: dict[str, Any], out: Path, runner: StepRunner, log: Callable[[str], None]
    ) -> None:
        from aelab.data import conform, load_dataset, split_dataset
        from aelab.models import auto_model_spec

        self.cfg, self.out, self.runner, self.log = cfg, out, runner, log
        self.seed, self.device = int(cfg["seed"]), str(cfg["device"])
        self.fig_dir = out / FIGURES
        d = cfg["data"]
        src = load_dataset(d["source"])
        if src.labels is None:
            raise ValueError(
                f"the study needs labeled data (class subfolders or labels); {d['source']} has none"
            )
        if d["model"] == "auto":
            self.model_name, self.model_overrides = auto_model_spec(*src.image_shape)
        else:
            self.model_name, self.model_overrides = d["model"], {}
        if d["image_size"]:
            self.model_overrides["image_size"] = int(d["image_size"])
        self.model_overrides["num_classes"] = src.num_classes
        probe = self._new_model()
        cfg_m = probe.config
        self.source = conform(src, image_size=cfg_m.image_size, channels=cfg_m.in_channels)
        self.splits = split_dataset(
            self.source,
            labels_per_class=int(d["labels_per_class"]) or None,
            val_per_class=int(d["val_per_class"]) or None,
            seed=self.seed,
        )
        self.test: ImageDataset | None = None
        if d["test"]:
            test = load_dataset(d["test"])
            test = conform(test, image_size=cfg_m.image_size, channels=cfg_m.in_channels)
            self.test = _subsample(test, int(d["max_test"]), self.seed)

    def _new_model(self) -> Any:
        from aelab.models import create_model

        return create_model(self.model_name, **self.model_overrides)

    # ------------------------------------------------------------------ steps
    def pretrain(self) -> dict[str, Any]:
        from aelab.pipeline import run_pretrain

        p = self.cfg["pretrain"]
        unlabeled = _subsample(
            self.splits.unlabeled, int(self.cfg["data"]["max_images"]), self.seed
        )
        res = run_pretrain(
            unlabeled, self.out, model=self.model_name, epochs=int(p["epochs"]),
            batch_size=int(p["batch_size"]), lr=float(p["lr"]), loss=p["loss"], augment=p["augment"],
            val_fraction=0.05, seed=self.seed, device=self.device, overwrite=True,
            model_overrides=self.model_overrides,
        )  # fmt: skip
        return _jsonable(res)

    def finetune(self, preset: str) -> dict[str, Any]:
        from aelab.pipeline import run_finetune

        f, d = self.cfg["finetune"], self.cfg["data"]
        res = run_finetune(
            self.source, self.out, init=self.out / "pretrain", name=f"finetune-{preset}",
            labels_per_class=int(d["labels_per_class"]), val_per_class=int(d["val_per_class"]),
            augment=preset, epochs=int(f["epochs"]), batch_size=int(f["batch_size"]), lr=float(f["lr"]),
            recon_weight=float(f["recon_weight"]), recipe=str(f["recipe"]), seed=self.seed,
            device=self.device, overwrite=True,
        )  # fmt: skip
        hist = res["history"]
        last = hist[-1] if hist else {}
        out = _jsonable(res)
        out.update(
            preset=preset, final_train_acc=last.get("train_acc"), final_val_acc=last.get("val_acc")
        )
        return out

    def predict(self, finetunes: dict[str, dict[str, Any]]) -> dict[str, Any]:
        from aelab.pipeline import run_evaluate, run_predict

        best = max(finetunes, key=lambda k: finetunes[k].get("best_val_acc") or -1.0)
        res: dict[str, Any] = {"best_run": best, "test_accuracy": {}}
        if self.test is None:
            return res
        ckpt = Path(finetunes[best]["run_dir"])
        pred = run_predict(self.test, ckpt, self.out / "submission.csv", device=self.device)
        res.update(
            path=pred["path"], n=pred["n"], predicted_counts=np.bincount(pred["labels"]).tolist()
        )
        if self.test.labels is not None:
            for name, r in finetunes.items():
                ev = run_evaluate(self.test, r["run_dir"], device=self.device)
                res["test_accuracy"][name] = ev["accuracy"]
        return res

    def cluster(self, finetune_dir: str) -> dict[str, Any]:
        from aelab import viz
        from aelab.clustering.sweep import alpha_sweep, search_alpha
        from aelab.data import select_classes
        from aelab.training import encode, load_model

        c = self.cfg["cluster"]
        pool = self.test if self.test is not None and self.test.labels is not None else self.source
        sub = select_classes(
            pool,
            list(c["classes"]),
            ratio=list(c["ratio"]),
            n=int(c["n"]),
            seed=self.seed,
            relabel=True,
        )
        ckpt = self.out / "pretrain" if c["encoder"] == "pretrain" else Path(finetune_dir)
        model, _ = load_model(ckpt, device=self.device)
        z = encode(model, sub, device=self.device)
        y = sub.labels.numpy()
        k = len(c["classes"])
        alpha = c["alpha"]
        search_rows: list[dict[str, Any]] = []
        if alpha == "target":
            best, search_rows = search_alpha(z, k, list(c["ratio"]), y=y, random_state=self.seed)
            base = best["alpha"]
        elif alpha == "auto":
            base = 2.0 / float(np.mean(np.sum((z - z.mean(0)) ** 2, axis=1)))
        else:
            base = float(alpha)
        factors = [float(f) for f in c["alpha_factors"]]
        rows = alpha_sweep(z, k, [base * f for f in factors], y=y, random_state=self.seed)
        names = [sub.class_name(i) for i in range(k)]
        fig = viz.latent_panels(
            z, [r["estimator"].labels_ for r in rows], [r["estimator"].cluster_centers_ for r in rows],
            titles=[f"alpha = {f:g} x {base:.3g} = {r['alpha']:.3g}" for r, f in zip(rows, factors, strict=True)],
            true_labels=y, class_names=names, method=c["map"], random_state=self.seed,
        )  # fmt: skip
        viz.save_figure(fig, self.fig_dir / "ekm_panels.png")
        table = [
            {"factor": f, **{kk: v for kk, v in r.items() if kk != "estimator"}}
            for r, f in zip(rows, factors, strict=True)
        ]
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["factor", "alpha", "sizes", "ari", "nmi", "n_iter", "converged", "objective"])
        for t in table:
            w.writerow([t["factor"], t["alpha"], ":".join(map(str, t["sizes"])), t.get("ari"), t.get("nmi"),
                        t["n_iter"], t["converged"], t["objective"]])  # fmt: skip
        write_text(self.out / "sweep.csv", buf.getvalue())
        return {
            "classes": names, "class_sizes": np.bincount(y, minlength=k).tolist(), "base_alpha": base,
            "alpha_mode": str(alpha), "rows": table, "encoder": str(ckpt),
            "search": [{"alpha": r["alpha"], "sizes": r["sizes"], "mismatch": r["mismatch"]} for r in search_rows],
            "figure": f"{FIGURES}/ekm_panels.png",
        }  # fmt: skip

    def anomaly(self) -> dict[str, Any]:
        from aelab import viz
        from aelab.data import conform, load_dataset
        from aelab.pipeline import anomaly_figures, run_anomaly_fit, split_by_class

        a = self.cfg["anomaly"]
        normal_train, _ = split_by_class(self.source, [a["normal_class"]])
        normal_train = _subsample(normal_train, int(a["max_images"]), self.seed)
        fit = run_anomaly_fit(
            normal_train, self.out / "anomaly", model=self.model_name, epochs=int(a["epochs"]),
            score=a["score"], threshold=a["threshold"], seed=self.seed, device=self.device,
        )  # fmt: skip
        det = fit["detector"]
        pool = self.test if self.test is not None and self.test.labels is not None else self.source
        normal, rest = split_by_class(pool, [a["normal_class"]])
        if a["anomalies"]:
            shape = det.image_shape_
            anomalous = conform(
                load_dataset(a["anomalies"]), image_size=shape[1], channels=shape[0]
            )
            what = str(a["anomalies"])
        else:
            anomalous, what = rest, "the other classes"
        anomalous = _subsample(anomalous, int(a["max_anomalies"]), self.seed)
        normal = _subsample(normal, int(a["max_anomalies"]), self.seed)
        metrics = det.evaluate(normal, anomalous)
        figs = anomaly_figures(det, normal, anomalous)
        files = {}
        for name, fig in figs.items():
            if not name.startswith("_"):
                files[name] = f"{FIGURES}/anomaly_{name}.png"
                viz.save_figure(fig, self.out / files[name])
        return {"metrics": metrics, "normal_class": pool.class_name(int(normal.labels[0])) if normal.labels is not None and len(normal) else str(a["normal_class"]),
                "anomalies": what, "n_train": fit["n_train"], "threshold_rule": fit["rule"], "figures": files,
                "history": fit["history"]}  # fmt: skip

    def reconstruct(self, finetune_dir: str) -> dict[str, Any]:
        from aelab.pipeline import run_reconstruct

        pool = self.test if self.test is not None else self.source
        res = run_reconstruct(
            pool, [self.out / "pretrain", Path(finetune_dir)], self.fig_dir / "reconstructions.png",
            n=int(self.cfg["reconstruct"]["n"]), seed=self.seed, device=self.device,
            titles=["pre-trained", "fine-tuned"],
        )  # fmt: skip
        return {"mse_pretrained": res["mse"][0], "mse_finetuned": res["mse"][1], "n": res["n"],
                "figure": f"{FIGURES}/reconstructions.png"}  # fmt: skip


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware, for the report."""
    import sklearn
    import torch

    from aelab import __version__
    from aelab.runtime import resolve_device

    dev = resolve_device(device)
    return {
        "aelab": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "scikit-learn": sklearn.__version__, "platform": platform.platform(),
        "device": str(dev) + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""),
        "cpu_threads": torch.get_num_threads(),
    }  # fmt: skip


def run_study(
    cfg: dict[str, Any],
    out: str | Path,
    *,
    resume: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the study with config ``cfg`` (see :func:`aelab.study.config.load_config`) into ``out``.

    Returns
    -------
    dict
        Step results, wall times, and the path of ``report.html``.
    """
    from aelab.report.study import build_report

    out = Path(out)
    if (out / "steps").exists() and not resume:
        raise ValueError(
            f"{out} already holds a study; add --resume to continue it or choose another --out"
        )
    t0 = time.perf_counter()
    write_text(out / "config.toml", dump_config(cfg))
    runner = StepRunner(out, resume=resume, log=log)
    study = _Study(cfg, out, runner, log)
    runner.run("pretrain", study.pretrain)
    finetunes = {
        preset: runner.run(f"finetune-{preset}", lambda p=preset: study.finetune(p))
        for preset in cfg["finetune"]["augment"]
    }
    pred = runner.run("predict", lambda: study.predict(finetunes))
    best_dir = finetunes[pred["best_run"]]["run_dir"]
    runner.run("cluster", lambda: study.cluster(best_dir))
    runner.run("anomaly", study.anomaly)
    runner.run("reconstruct", lambda: study.reconstruct(best_dir))
    results = {
        "steps": runner.results, "wall_s": runner.wall, "reused": runner.reused, "config": cfg,
        "environment": environment(study.device), "total_wall_s": time.perf_counter() - t0,
        "data": {"source": cfg["data"]["source"], "n_source": len(study.source),
                 "image_shape": list(study.source.image_shape), "class_names": study.source.class_names,
                 "splits": study.splits.summary(), "n_test": 0 if study.test is None else len(study.test),
                 "model": study.model_name, "model_overrides": study.model_overrides},
    }  # fmt: skip
    model = study._new_model()
    report = build_report(results, out, model=model)
    log(f"[report] wrote {report}")
    results["report"] = str(report)
    return results
