"""Settings on the command line: --set reaches every config field, errors name the setting,
and the defaults the help texts quote are the config dataclasses' own."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from aelab.cli.main import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def npz(tmp_path):
    from conftest import make_shapes

    images, labels, names = make_shapes(90)
    path = tmp_path / "shapes.npz"
    np.savez(path, images=images, labels=labels, class_names=np.array(names))
    return path


def test_set_reaches_fields_without_a_flag(npz, tmp_path):
    args = ["finetune", str(npz), "--out", str(tmp_path / "r"), "--model", "convae_tiny",
            "--labels-per-class", "5", "--val-per-class", "5", "--epochs", "1", "--batch-size", "8",
            "--device", "cpu", "--set", "unlabeled_ratio=2", "--set", "mask_ratio=0.5"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "unknown setting 'mask_ratio'" in r.output  # a pretrain field
    assert "known settings:" in r.output and "ema_decay" in r.output
    r = runner.invoke(app, [*args[:-2], "--set", "ema_decay=0.5", "--set", "warmup_epochs=0"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "r" / "finetune" / "run.json").read_text())
    settings = rec["options"]["settings"]
    assert rec["options"]["speed"].startswith("amp: ")  # what amp="auto" chose, recorded
    assert settings["ema_decay"] == 0.5 and settings["unlabeled_ratio"] == 2
    assert (
        settings["warmup_epochs"] == 0.0
        and settings["epochs"] == 1
        and rec["options"]["recipe"] == "default"
    )


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--epochs", "2", "--set", "epochs=3"], "given both as a flag and with --set"),
        (["--lr", "inf"], "finite"),
        (["--lr", "nan"], "finite"),
        (["--set", "lr"], "key=value"),
        (["--set", "epochs=many"], "epochs: 'many' is not an integer"),
        (["--max-images", "-5"], "max_images must be >= 0"),
        (["--set", "model_overrides={widths=[999999999]}"], "widths"),
    ],
)
def test_bad_settings_are_one_line_errors(npz, tmp_path, extra, msg):
    out = tmp_path / "r"
    r = runner.invoke(app, ["pretrain", str(npz), "--out", str(out), "--device", "cpu", *extra])
    assert r.exit_code == 2, r.output
    assert msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (out / "pretrain" / "model.safetensors").exists()


def _defaults_quoted(command: str) -> dict[str, str]:
    """``--flag`` -> the default its help text quotes as "(default X)" or "default X)"."""
    cmd = typer.main.get_command(app)
    for part in command.split():
        cmd = cmd.commands[part]  # type: ignore[attr-defined]
    out = {}
    for p in cmd.params:
        m = re.search(r"default:? ([^);]+?)(?:[);]|$)", p.help or "")
        if m and p.opts:
            out[p.opts[0]] = m.group(1).strip()
    return out


def _same(quoted: str, value: object) -> bool:
    quoted = quoted.split()[0].rstrip(":,")
    if isinstance(value, bool):
        return quoted.lower() in ("true", "false") and (quoted.lower() == "true") == value
    if isinstance(value, int | float):
        try:
            return float(quoted) == float(value)
        except ValueError:
            return False
    return quoted.strip("'\"") == str(value)


@pytest.mark.parametrize(
    "command", ["pretrain", "finetune", "deepcluster", "cluster", "anomaly fit"]
)
def test_help_quotes_the_config_defaults(command):
    """A default in a help text is the config's: no setting is declared twice."""
    from aelab.deepcluster import DeepClusterConfig
    from aelab.tasks import AnomalyFitOptions, ClusterOptions, PretrainOptions, finetune_options

    config = {
        "pretrain": PretrainOptions(), "finetune": finetune_options("default"),
        "deepcluster": DeepClusterConfig(k=3), "cluster": ClusterOptions(k=3),
        "anomaly fit": AnomalyFitOptions(),
    }[command]  # fmt: skip
    renames = {"--pca-dim": "n_components", "--map": "map", "--seed": "seed", "--bf16": "amp"}
    quoted = _defaults_quoted(command)
    checked = 0
    for flag, text in quoted.items():
        field = renames.get(flag, flag.lstrip("-").replace("-", "_"))
        if command == "anomaly fit" and field == "seed":
            field = "random_state"
        if getattr(config, field, None) is None or text.startswith(
            ("from", "the", "off", "see", "use")
        ):
            continue  # described in words (the recipe's, the model's...)
        assert _same(text, getattr(config, field)), (command, flag, text, getattr(config, field))
        checked += 1
    assert checked >= 2, quoted
