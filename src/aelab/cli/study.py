"""``aelab study``: the whole study from one command, ending in report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from aelab.cli._common import echo, user_errors


def study_cmd(
    config: Path | None = typer.Argument(
        None, help="A TOML config (see --print-config); defaults otherwise."
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Labeled data: image folder (one subfolder per class), .npz, or fashion-mnist.",
    ),
    test: str | None = typer.Option(
        None,
        "--test",
        help="Images to predict for submission.csv (default auto: a held-out part of --data, "
        "or Fashion-MNIST's test split for the demo data).",
    ),
    unlabeled: str | None = typer.Option(
        None,
        "--unlabeled",
        help="More images without labels (flat folder or .npy/.npz) for pre-training and "
        "FixMatch ([data] unlabeled).",
    ),
    anomalies: str | None = typer.Option(
        None, "--anomalies", help="Another data source of anomalies."
    ),
    out: Path = typer.Option(Path("runs/study"), "--out", help="Run folder."),
    quick: bool = typer.Option(
        False, "--quick", help="Smaller subsets and fewer epochs (same report)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Reuse steps that already finished in OUT."
    ),
    seed: int | None = typer.Option(None, "--seed"),
    device: str | None = typer.Option(
        None, "--device", help="auto (CUDA when present), cpu, cuda, cuda:N."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the default config and exit."
    ),
) -> None:
    """Run the whole study: pre-train, fine-tune with/without augmentation and with the
    default recipe, predict, cluster latents with EKM, detect anomalies, reconstruct, and
    write report.html."""
    if print_config:
        from aelab.study.config import default_toml

        typer.echo(default_toml(), nl=False)
        raise typer.Exit()
    with user_errors():
        from aelab.report import write_report
        from aelab.study import load_config, run_study
        from aelab.study.run import study_output

        over: dict = {}
        if data is not None:
            over.setdefault("data", {})["source"] = data
        if test is not None:
            over.setdefault("data", {})["test"] = test
        if unlabeled is not None:
            over.setdefault("data", {})["unlabeled"] = unlabeled
        if anomalies is not None:
            over.setdefault("anomaly", {})["anomalies"] = anomalies
        if seed is not None:
            over["seed"] = seed
        if device is not None:
            over["device"] = device
        cfg = load_config(config, quick=quick, overrides=over, log=echo)
        with study_output(cfg, out, resume=resume):  # one lock over the steps and the report
            res = run_study(cfg, out, resume=resume, log=echo)
            report = write_report(res, out)
        echo(f"[report] wrote {report}")
        echo(f"study finished in {res.total_wall_s:.0f} s; report: {report}")


def register(app: typer.Typer) -> None:
    app.command("study")(study_cmd)
