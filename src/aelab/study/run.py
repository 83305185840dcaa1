"""``aelab study``: the whole study of docs/study.md, step by step, into one run folder.

The plan (:func:`aelab.study.plan.make_plan`) loads and splits the data once
and checks every setting before any training. Then the steps run in order,
each one a task of :mod:`aelab.tasks`: pre-training; fine-tuning once per
augmentation preset (the ablation, recipe ``plain``); one run of the default
recipe (FixMatch) from the same encoder, which writes ``submission.csv``
(``[finetune] submit``) and gives cluster and reconstruct their fine-tuned
model; prediction to ``submission.csv``; EKM on
a class subset in a ratio, at the best-fitting alpha and its multiples;
anomaly detection with one class as normal; reconstructions before and after
fine-tuning. Every step records its typed result in ``steps/`` with its
fingerprint (:class:`_Fingerprints`: the settings, data and earlier steps it
reads); ``resume=True`` reuses a finished step whose fingerprint is unchanged
and runs the others again. :func:`aelab.report.write_report`
turns the returned :class:`~aelab.study.results.StudyResults` into ``report.html``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from aelab.data import data_digest
from aelab.files import write_text
from aelab.fingerprint import Fingerprint, flat_settings
from aelab.study.config import StudyConfig, dump_config
from aelab.study.plan import StudyPlan, make_plan
from aelab.study.results import (
    AnomalyStep,
    ClusterStep,
    DataSummary,
    PredictStep,
    StudyResults,
)
from aelab.study.steps import StepRunner
from aelab.tasks import (
    FinetuneOptions,
    FinetuneResult,
    PretrainResult,
    ReconstructResult,
    SplitSizes,
    run_anomaly_eval,
    run_anomaly_fit,
    run_cluster,
    run_embed,
    run_evaluate,
    run_finetune,
    run_predict,
    run_pretrain,
    run_reconstruct,
)

__all__ = ["environment", "run_study", "study_output"]

FIGURES = "figures"

#: The name of the default-recipe run (``finetune-default``; never an augmentation preset's).
DEFAULT_RUN = "default"


class _Steps:
    """The study's steps over one plan; each returns a typed record (trusts the plan)."""

    def __init__(self, plan: StudyPlan, out: Path) -> None:
        self.plan, self.out, self.cfg = plan, out, plan.config

    def pretrain(self) -> PretrainResult:
        return run_pretrain(self.plan.pretrain_images, self.out, self.cfg.pretrain, overwrite=True)

    def finetune(self, preset: str) -> FinetuneResult:
        opts = dataclasses.replace(self.cfg.finetune.settings, augment=preset)
        return run_finetune(
            self.plan.pool_splits, self.out, opts, init=self.out / "pretrain",
            name=f"finetune-{preset}", recipe=self.cfg.finetune.recipe, overwrite=True,
        )  # fmt: skip

    def finetune_default(self) -> FinetuneResult:
        """The default recipe (FixMatch) from the same pre-trained encoder: the submitted run."""
        return run_finetune(
            self.plan.pool_splits, self.out, self.cfg.finetune.default,
            init=self.out / "pretrain", name=f"finetune-{DEFAULT_RUN}", recipe="default",
            overwrite=True,
        )  # fmt: skip

    def predict(self, runs: dict[str, FinetuneResult]) -> PredictStep:
        """``submission.csv`` from the run ``[finetune] submit`` names; every run's test accuracy.

        ``runs`` maps a run's name (its preset, or ``"default"``) to its result.
        """
        if self.cfg.finetune.submit == DEFAULT_RUN:
            best = DEFAULT_RUN
        else:
            best = max((k for k in runs if k != DEFAULT_RUN),
                       key=lambda k: runs[k].best_val_acc or -1.0)  # fmt: skip
        test, dev = self.plan.test, self.cfg.device
        pred = run_predict(
            test, runs[best].run_dir, self.out / "submission.csv", device=dev, overwrite=True
        )
        acc = {}
        if test.labels is not None:
            acc = {k: run_evaluate(test, r.run_dir, device=dev).accuracy for k, r in runs.items()}
        return PredictStep(best_run=best, prediction=pred, test_accuracy=acc)

    def cluster(self, finetune_dir: Path) -> ClusterStep:
        c = self.cfg.cluster
        sub = self.plan.cluster_subset
        ckpt = self.out / "pretrain" if c.encoder == "pretrain" else finetune_dir
        folder = self.out / "cluster"
        # Beside the cluster folder, not in it: an output never holds one of its inputs.
        lat = run_embed(sub, ckpt, self.out / "latents.npz", device=self.cfg.device, overwrite=True)
        figure = self.out / FIGURES / "ekm_panels.png"
        res = run_cluster(lat.path, folder, c.settings, plot=figure, overwrite=True)
        counts = np.bincount(sub.labels.numpy(), minlength=len(c.classes))  # type: ignore[union-attr]
        return ClusterStep(
            classes=tuple(sub.class_name(i) for i in range(len(c.classes))),
            class_sizes=tuple(int(v) for v in counts), encoder=ckpt.name, result=res, figure=figure,
        )  # fmt: skip

    def anomaly(self) -> AnomalyStep:
        a, p = self.cfg.anomaly, self.plan
        fit = run_anomaly_fit(p.normal_train, self.out / "anomaly", a.settings, overwrite=True)
        ev = run_anomaly_eval(
            fit.path, p.normal_eval, p.anomalous_eval, self.out / FIGURES / "anomaly",
            device=self.cfg.device, overwrite=True,
        )  # fmt: skip
        return AnomalyStep(normal_class=str(a.normal_class), anomalies=p.anomalies_name, fit=fit,
                           evaluation=ev)  # fmt: skip

    def reconstruct(self, finetune_dir: Path) -> ReconstructResult:
        return run_reconstruct(
            self.plan.test, [self.out / "pretrain", finetune_dir],
            self.out / FIGURES / "reconstructions.png", n=self.cfg.reconstruct_n,
            seed=self.cfg.seed, device=self.cfg.device, titles=["pre-trained", "fine-tuned"],
            overwrite=True,
        )  # fmt: skip


class _Fingerprints:
    """What each step reads: its settings, its images, and the steps whose results it takes.

    Only what the step really uses, so that a changed setting runs again the
    steps that depend on it and no other.
    """

    def __init__(self, plan: StudyPlan, digests: dict[str, str]) -> None:
        self.plan, self.cfg, self.digests = plan, plan.config, digests

    def pretrain(self) -> Fingerprint:
        return Fingerprint(
            settings=flat_settings(self.cfg.pretrain),
            data={"training images": data_digest(self.plan.pretrain_images)},
        )

    def finetune(self, preset: str) -> Fingerprint:
        ft = self.cfg.finetune
        return self._finetune(ft.recipe, dataclasses.replace(ft.settings, augment=preset))

    def finetune_default(self) -> Fingerprint:
        return self._finetune("default", self.cfg.finetune.default)

    def _finetune(self, recipe: str, opts: FinetuneOptions) -> Fingerprint:
        s = self.plan.pool_splits
        data = {"labelled images": data_digest(s.labeled), "validation images": data_digest(s.val)}
        if opts.uses_unlabeled:
            data["unlabeled images"] = data_digest(s.unlabeled)
        return Fingerprint(
            settings={"recipe": recipe, **flat_settings(opts)}, data=data,
            inputs={"pretrain": self.digests["pretrain"]},
        )  # fmt: skip

    def predict(self, names: list[str]) -> Fingerprint:
        return Fingerprint(
            settings={"submit": self.cfg.finetune.submit},
            data={"test images": data_digest(self.plan.test)},
            inputs={f"finetune-{n}": self.digests[f"finetune-{n}"] for n in names},
        )

    def _encoder(self, step: str) -> str:
        return f"{step} {self.digests[step]}"

    def cluster(self, best: str) -> Fingerprint:
        step = "pretrain" if self.cfg.cluster.encoder == "pretrain" else f"finetune-{best}"
        return Fingerprint(
            settings=flat_settings(self.cfg.cluster),
            data={"cluster images": data_digest(self.plan.cluster_subset)},
            inputs={"encoder": self._encoder(step)},
        )

    def anomaly(self) -> Fingerprint:
        p = self.plan
        data = {"normal training images": p.normal_train, "normal test images": p.normal_eval,
                "anomalous test images": p.anomalous_eval}  # fmt: skip
        return Fingerprint(
            settings=flat_settings(self.cfg.anomaly),
            data={k: data_digest(v) for k, v in data.items()},
        )

    def reconstruct(self, best: str) -> Fingerprint:
        return Fingerprint(
            settings={"n": self.cfg.reconstruct_n, "seed": self.cfg.seed},
            data={"test images": data_digest(self.plan.test)},
            inputs={"pretrain": self.digests["pretrain"],
                    "fine-tuned model": self._encoder(f"finetune-{best}")},
        )  # fmt: skip


def environment(device: str) -> dict[str, str]:
    """Versions and hardware, for the report."""
    import sklearn
    import torch

    from aelab import __version__
    from aelab.runtime import resolve_device

    dev = resolve_device(device)
    name = f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else ""
    return {
        "aelab": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": np.__version__, "scikit-learn": sklearn.__version__, "platform": platform.platform(),
        "device": f"{dev}{name}", "cpu_threads": str(torch.get_num_threads()),
    }  # fmt: skip


def _summary(plan: StudyPlan, cfg: StudyConfig) -> DataSummary:
    s = plan.source
    return DataSummary(
        source=cfg.data.source, n_source=len(s), image_shape=tuple(s.image_shape),
        class_names=tuple(s.class_name(i) for i in range(s.num_classes or 0)),
        splits=SplitSizes.of(plan.splits), test=plan.test_name, n_test=len(plan.test),
        model=plan.model_name, unlabeled=cfg.data.unlabeled,
        n_unlabeled=len(plan.pretrain_images) - len(plan.splits.unlabeled),
    )  # fmt: skip


@contextlib.contextmanager
def study_output(cfg: StudyConfig, out: str | Path, *, resume: bool = False) -> Iterator[Path]:
    """Claim the study folder ``out`` (:func:`aelab.tasks.outputs.output_folder`) for the block.

    It may not be, contain or lie inside the study's data, nor lie inside a
    folder another command wrote; the study holds its lock throughout, and
    each step writes inside it. A refusal leaves nothing behind.
    """
    from aelab.runtime import resolve_device
    from aelab.tasks.outputs import output_folder

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder")
    if (out / "steps").exists() and not resume:
        raise ValueError(
            f"{out} already holds a study; add --resume to continue it or choose another --out"
        )
    resolve_device(cfg.device)  # a device this machine lacks is refused before anything is written
    inputs = [cfg.data.source, cfg.data.test, cfg.data.unlabeled, cfg.anomaly.anomalies]
    with output_folder(out, "study", inputs=[i for i in inputs if i]) as out:
        yield out


def run_study(
    cfg: StudyConfig, out: str | Path, *, resume: bool = False, log: Callable[[str], None] = print
) -> StudyResults:
    """Run the study with config ``cfg`` (see :func:`aelab.study.config.load_config`) into ``out``.

    Every data-dependent setting is derived and checked before the first step
    trains anything (a ValueError names the setting otherwise).

    Returns
    -------
    StudyResults
    """
    with study_output(cfg, out, resume=resume) as out:
        return _run_study(cfg, out, resume, log)


def _run_study(
    cfg: StudyConfig, out: Path, resume: bool, log: Callable[[str], None]
) -> StudyResults:
    t0 = time.perf_counter()
    plan = make_plan(cfg)
    runner, steps = StepRunner(out, resume=resume, log=log), _Steps(plan, out)
    fp = _Fingerprints(plan, runner.digests)
    pre = runner.run("pretrain", PretrainResult, steps.pretrain, fp.pretrain())
    runs = {p: runner.run(f"finetune-{p}", FinetuneResult, lambda p=p: steps.finetune(p),
                          fp.finetune(p)) for p in plan.config.finetune.ablation}  # fmt: skip
    if plan.config.finetune.submit == DEFAULT_RUN:
        runs[DEFAULT_RUN] = runner.run(f"finetune-{DEFAULT_RUN}", FinetuneResult,
                                       steps.finetune_default, fp.finetune_default())  # fmt: skip
    pred = runner.run("predict", PredictStep, lambda: steps.predict(runs), fp.predict(list(runs)))
    best = runs[pred.best_run].run_dir
    cluster = runner.run("cluster", ClusterStep, lambda: steps.cluster(best),
                         fp.cluster(pred.best_run))  # fmt: skip
    anomaly = runner.run("anomaly", AnomalyStep, steps.anomaly, fp.anomaly())
    recon = runner.run("reconstruct", ReconstructResult, lambda: steps.reconstruct(best),
                       fp.reconstruct(pred.best_run))  # fmt: skip
    # Last, so that it describes the results the folder holds (the report is written next).
    write_text(out / "config.toml", dump_config(cfg))
    return StudyResults(
        data=_summary(plan, cfg), pretrain=pre,
        finetunes=tuple(r for k, r in runs.items() if k != DEFAULT_RUN), predict=pred,
        cluster=cluster, anomaly=anomaly, reconstruct=recon, timings=tuple(runner.times),
        total_wall_s=time.perf_counter() - t0, seed=cfg.seed, config_toml=dump_config(cfg),
        environment=environment(cfg.device), default_run=runs.get(DEFAULT_RUN),
        default_shortened=_shortened(plan.config) if DEFAULT_RUN in runs else "",
    )  # fmt: skip


def _shortened(cfg: StudyConfig) -> str:
    """How the default-recipe run's schedule falls short of the recipe's (empty when it does not).

    ``--quick`` shortens it; the report says so beside its numbers.
    """
    run, recipe = cfg.finetune.default, FinetuneOptions.recipe("default")
    short = [f"{name} {getattr(run, name)} (the recipe's {getattr(recipe, name)})"
             for name in ("epochs", "min_epoch_steps", "batch_size")
             if getattr(run, name) < getattr(recipe, name)]  # fmt: skip
    if cfg.finetune.max_unlabeled:
        short.append(f"at most {cfg.finetune.max_unlabeled} unlabeled images (the recipe's: all)")
    return ", ".join(short)
