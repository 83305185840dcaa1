"""Settings on the command line: --config FILE and --set reach every config field, errors name
the setting, --help lists every field with its default (generated from the dataclasses), and
the flags that moved to --set still work, with a one-line notice."""

from __future__ import annotations

import dataclasses
import json

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


def test_set_and_config_reach_fields_without_a_flag(npz, tmp_path):
    conf = tmp_path / "ft.toml"
    conf.write_text("ema_decay = 0.25\nwarmup_epochs = 0.5\nbatch_size = 8\n")
    args = ["finetune", str(npz), "--out", str(tmp_path / "r"), "--model", "convae_tiny",
            "--labels-per-class", "5", "--epochs", "1", "--device", "cpu", "--config", str(conf),
            "--set", "val_per_class=5", "--set", "unlabeled_ratio=2", "--set", "mask_ratio=0.5"]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 2 and "unknown setting 'mask_ratio'" in r.output  # a pretrain field
    assert "known settings:" in r.output and "ema_decay" in r.output
    r = runner.invoke(app, [*args[:-2], "--set", "ema_decay=0.5", "--set", "warmup_epochs=0"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "r" / "finetune" / "run.json").read_text())
    settings = rec["options"]["settings"]
    assert rec["options"]["speed"].startswith("amp: ")  # what amp="auto" chose, recorded
    # --set over the file, the file over the recipe (its 64-image batch), the recipe over the default
    assert settings["ema_decay"] == 0.5 and settings["unlabeled_ratio"] == 2
    assert settings["batch_size"] == 8 and settings["threshold"] == 0.8
    assert (
        settings["warmup_epochs"] == 0.0
        and settings["epochs"] == 1
        and rec["options"]["recipe"] == "default"
    )


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--epochs", "2", "--set", "epochs=3"], "given both as a flag and with --set"),
        (["--set", "lr=inf"], "finite"),
        (["--set", "lr=nan"], "finite"),
        (["--lr", "inf"], "finite"),  # an old flag: the error, and no notice before it
        (["--set", "lr"], "key=value"),
        (["--set", "epochs=many"], "epochs: 'many' is not an integer"),
        (["--set", "max_images=-5"], "max_images must be >= 0"),
        (["--set", "model_overrides={widths=[999999999]}"], "widths"),
        (["--lr", "0.1", "--set", "lr=0.2"], "lr given both as an old flag and with --set"),
        (["--set", "lr=0.1", "--set", "lr=0.2"], "--set lr given twice"),
        (["--amp", "bf16", "--bf16"], "the setting amp was given by another old flag"),
    ],
)
def test_bad_settings_are_one_line_errors(npz, tmp_path, extra, msg):
    out = tmp_path / "r"
    r = runner.invoke(app, ["pretrain", str(npz), "--out", str(out), "--device", "cpu", *extra])
    assert r.exit_code == 2, r.output
    assert msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (out / "pretrain" / "model.safetensors").exists()


@pytest.mark.parametrize(
    "text, msg",
    [
        ("epochs = 'many'", "epochs: 'many' is not an integer"),
        ("lr = 0.1\nlr = 0.2", "not a TOML file"),  # a key twice in the file
        ("nonsense = 1", "unknown setting 'nonsense'; known settings:"),
        ("lr = [", "not a TOML file"),
    ],
)
def test_bad_config_files_are_one_line_errors(npz, tmp_path, text, msg):
    conf = tmp_path / "c.toml"
    conf.write_text(text)
    out = tmp_path / "r"
    r = runner.invoke(app, ["pretrain", str(npz), "--out", str(out), "--config", str(conf)])
    assert r.exit_code == 2, r.output
    assert msg in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()
    r = runner.invoke(app, ["pretrain", str(npz), "--out", str(out), "--config", str(out / "x")])
    assert r.exit_code == 2 and "no such file" in r.output


class _Called(Exception):
    """Raised by a stand-in task: the command got this far, with these settings."""

    def __init__(self, args: tuple, kwargs: dict) -> None:
        super().__init__("called")
        self.args_, self.kwargs = args, kwargs


def _stand_in(monkeypatch, name: str, build=None):
    """Replace ``aelab.tasks.<name>`` by a function raising :class:`_Called` with its arguments."""
    import aelab.tasks

    def fake(*args, **kwargs):
        raise _Called(args, build(**kwargs) if build else kwargs)

    monkeypatch.setattr(aelab.tasks, name, fake)


def test_config_file_precedence(monkeypatch, tmp_path):
    """defaults < recipe < --config file < --set and flags, in the settings the task builds."""
    from aelab.tasks import finetune_options

    def build(recipe, init, name, resume, overwrite, unlabeled, **given):  # run_finetune builds
        return dataclasses.asdict(finetune_options(recipe, **given))

    _stand_in(monkeypatch, "run_finetune", build)
    conf = tmp_path / "c.toml"
    conf.write_text("threshold = 0.7\nlr = 0.01\nepochs = 5\nema_decay = 0.9\n")
    r = runner.invoke(app, ["finetune", "x.npz", "--out", str(tmp_path), "--config", str(conf),
                            "--set", "lr=0.02", "--epochs", "7"])  # fmt: skip
    assert isinstance(r.exception, _Called), r.output
    s = r.exception.kwargs
    assert s["threshold"] == 0.7 and s["ema_decay"] == 0.9  # the file over the recipe's
    assert s["lr"] == 0.02 and s["epochs"] == 7  # --set and the flag over the file
    assert s["label_smoothing"] == 0.0 and s["semi"] == "fixmatch"  # the recipe's
    assert s["weight_decay"] == 1e-4  # the default
    r = runner.invoke(app, ["finetune", "x.npz", "--out", str(tmp_path), "--config", str(conf),
                            "--recipe", "plain"])  # fmt: skip
    s = r.exception.kwargs
    assert s["semi"] == "none" and s["threshold"] == 0.7 and s["augment"] == "standard"


# ----------------------------------------------------------------------------- the help


def _commands():
    """(name, click command) of every command, groups' subcommands included."""
    root = typer.main.get_command(app)
    out = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        subs = getattr(cmd, "commands", None)
        out += [(f"{name} {n}", c) for n, c in subs.items()] if subs else [(name, cmd)]
    return out


@pytest.mark.parametrize("name, cmd", _commands(), ids=[n for n, _ in _commands()])
def test_help_shows_at_most_12_options(name, cmd):
    visible = [p.opts[0] for p in cmd.params
               if p.param_type_name == "option" and not getattr(p, "hidden", False)]  # fmt: skip
    assert len(visible) <= 12, (name, visible)
    r = runner.invoke(app, [*name.split(), "--help"])
    assert r.exit_code == 0 and all(flag in r.output for flag in visible), r.output


def _listings():
    import aelab.tasks as t
    import aelab.training as tr

    return {
        "pretrain": tr.PretrainConfig, "finetune": tr.FinetuneConfig, "embed": t.EmbedOptions,
        "cluster": t.ClusterOptions, "deepcluster": t.DeepClusterOptions,
        "anomaly fit": t.AnomalyFitOptions,
    }  # fmt: skip


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@pytest.mark.parametrize("command", ["pretrain", "finetune", "embed", "cluster", "deepcluster",
                                     "anomaly fit"])  # fmt: skip
def test_help_lists_every_setting_with_its_default(command):
    config = _listings()[command]
    r = runner.invoke(app, [*command.split(), "--help"])
    assert r.exit_code == 0, r.output
    listing = r.output[r.output.index("Settings (--set key=value"):]
    fields = [f for f in dataclasses.fields(config) if f.init]
    assert len(fields) == sum(1 for line in listing.splitlines() if " = " in line[:40]
                              and line.startswith("  ") and not line.startswith("   "))  # fmt: skip
    for f in fields:
        default = "(required)" if f.default is dataclasses.MISSING else _shown(f.default)
        assert f"\n  {f.name} = {default}" in listing, (command, f.name)
    assert max(map(len, listing.splitlines())) <= 80
    if command == "finetune":  # the recipes, from FINETUNE_RECIPES
        assert "  fixmatch: augment=weak, semi=fixmatch, epochs=3" in listing


def test_the_listing_is_generated_from_fields_and_docstrings():
    """A new field, documented in the dataclass, appears in the listing with its default."""
    from aelab.cli._settings import Listing, listing_text
    from aelab.tasks import EmbedOptions

    @dataclasses.dataclass
    class More(EmbedOptions):
        """More settings.

        Parameters
        ----------
        jitter : float
            How much to shake, e.g. 0.5. More text that is not shown.
        a, b : int
            Two at once.
        """

        jitter: float = 0.25
        a: int = 1
        b: int | None = None

    text = listing_text(Listing(More))
    assert "\n  jitter = 0.25  How much to shake, e.g. 0.5.\n" in text
    assert "\n  a = 1  Two at once.\n" in text and "\n  b = none  Two at once.\n" in text
    assert "\n  batch_size = 256  Images per forward pass.\n" in text  # from the base class


def test_help_renders_as_plain_text_for_click_and_sphinx_click():
    """The listing is the command's epilog, each block kept as written (click's \\b marker)."""
    cmd = dict(_commands())["cluster"]
    epilog = cmd.epilog
    assert epilog.startswith("\b\nSettings (--set key=value") and "\n  n_init = 10  " in epilog
    assert "[" not in epilog.split("target_ratio")[0]  # nothing rich would read as markup before


# ----------------------------------------------------------------------------- moved flags

#: Every flag that moved to --set: command -> [(old flag and value, setting, value it gives)].
MOVED = {
    "pretrain": [
        (["--batch-size", "16"], "batch_size", 16), (["--lr", "0.003"], "lr", 0.003),
        (["--loss", "l1"], "loss", "l1"), (["--augment", "weak"], "augment", "weak"),
        (["--mask-ratio", "0.5"], "mask_ratio", 0.5),
        (["--val-fraction", "0.2"], "val_fraction", 0.2),
        (["--max-images", "8"], "max_images", 8), (["--amp", "bf16"], "amp", "bf16"),
        (["--bf16"], "amp", "bf16"), (["--seed", "3"], "seed", 3),
    ],
    "finetune": [
        (["--val-per-class", "5"], "val_per_class", 5),
        (["--val-fraction", "0.2"], "val_fraction", 0.2), (["--augment", "none"], "augment", "none"),
        (["--batch-size", "16"], "batch_size", 16), (["--lr", "0.003"], "lr", 0.003),
        (["--recon-weight", "0.1"], "recon_weight", 0.1),
        (["--freeze-encoder-epochs", "2"], "freeze_encoder_epochs", 2),
        (["--encoder-lr-mult", "0.5"], "encoder_lr_mult", 0.5),
        (["--label-smoothing", "0.2"], "label_smoothing", 0.2), (["--semi", "none"], "semi", "none"),
        (["--unlabeled-weight", "0.5"], "unlabeled_weight", 0.5),
        (["--threshold", "0.9"], "threshold", 0.9),
        (["--unlabeled-ratio", "2"], "unlabeled_ratio", 2),
        (["--distribution-alignment"], "distribution_alignment", True),
        (["--no-distribution-alignment"], "distribution_alignment", False),
        (["--ema-decay", "0.99"], "ema_decay", 0.99), (["--patience", "3"], "patience", 3),
        (["--patience", "0"], "patience", None), (["--amp", "none"], "amp", "none"),
        (["--bf16"], "amp", "bf16"), (["--seed", "3"], "seed", 3),
    ],
    "embed": [
        (["--shard-size", "100"], "shard_size", 100), (["--classes", "0,2"], "classes", [0, 2]),
        (["--classes", "0,2", "--ratio", "2:1"], "ratio", [2.0, 1.0]), (["--n", "10"], "n", 10),
        (["--seed", "3"], "seed", 3), (["--batch-size", "32"], "batch_size", 32),
    ],
    "cluster": [
        (["--target-ratio", "2:1:1"], "target_ratio", [2.0, 1.0, 1.0]),
        (["--alpha-sweep", "0.1x,1x"], "sweep", "0.1x,1x"), (["--map", "pca"], "map", "pca"),
        (["--space", "l2"], "space", "l2"), (["--pca-dim", "4"], "n_components", 4),
        (["--seed", "3"], "seed", 3), (["--key", "z"], "key", "z"),
        (["--labels-key", "y"], "labels_key", "y"), (["--n-init", "2"], "n_init", 2),
        (["--update", "fixed-point"], "update", "fixed-point"), (["--max-iter", "50"], "max_iter", 50),
    ],
    "deepcluster": [
        (["--method", "kmeans"], "method", "kmeans"), (["--rounds", "2"], "rounds", 2),
        (["--epochs-per-round", "2"], "epochs_per_round", 2), (["--gamma", "0.5"], "gamma", 0.5),
        (["--alpha", "3x"], "alpha", "3x"), (["--space", "raw"], "space", "raw"),
        (["--pca-dim", "4"], "n_components", 4), (["--lr", "0.001"], "lr", 0.001),
        (["--batch-size", "16"], "batch_size", 16), (["--classes", "0,1"], "classes", [0, 1]),
        (["--classes", "0,1", "--ratio", "2:1"], "ratio", [2.0, 1.0]), (["--n", "10"], "n", 10),
        (["--seed", "3"], "seed", 3), (["--progress"], "progress", True),
    ],
    "anomaly fit": [
        (["--batch-size", "16"], "batch_size", 16), (["--lr", "0.003"], "lr", 0.003),
        (["--score", "mse"], "score", "mse"), (["--threshold", "fpr:0.1"], "threshold", "fpr:0.1"),
        (["--latent-dim", "8"], "model_overrides", {"latent_dim": 8}),
        (["--calibration-fraction", "0.2"], "calibration_fraction", 0.2), (["--k", "3"], "k", 3),
        (["--max-images", "10"], "max_images", 10), (["--seed", "3"], "random_state", 3),
    ],
}  # fmt: skip

_TASK = {"pretrain": "run_pretrain", "finetune": "run_finetune", "embed": "run_embed",
         "cluster": "run_cluster", "deepcluster": "run_deepcluster",
         "anomaly fit": "run_anomaly_fit"}  # fmt: skip
_REQUIRED = {"pretrain": ["--out", "o"], "finetune": ["--out", "o"],
             "embed": ["--ckpt", "c", "--out", "o"], "cluster": ["--k", "3"],
             "deepcluster": ["--init", "i", "--k", "2", "--out", "o"], "anomaly fit": ["--out", "o"]}  # fmt: skip


def test_every_moved_flag_is_checked():
    from aelab.cli._settings import KEPT_HIDDEN

    commands = dict(_commands())
    for command, cases in MOVED.items():
        hidden = {o for p in commands[command].params if getattr(p, "hidden", False)
                  and p.name not in KEPT_HIDDEN for o in [*p.opts, *p.secondary_opts]}  # fmt: skip
        assert hidden == {args[-2 if len(args) > 1 and not args[-1].startswith("-") else -1]
                          for args, *_ in cases}, command  # fmt: skip


@pytest.mark.parametrize(
    "command, args, key, value",
    [(c, *case) for c, cases in MOVED.items() for case in cases],
    ids=[f"{c}{case[0][-2 if len(case[0]) > 1 else -1]}" for c, cases in MOVED.items() for case in cases],
)
def test_moved_flags_still_work_with_a_notice(monkeypatch, command, args, key, value):
    _stand_in(monkeypatch, _TASK[command])
    r = runner.invoke(app, [*command.split(), "x.npz", *_REQUIRED[command], *args])
    assert isinstance(r.exception, _Called), r.output
    assert r.exception.kwargs[key] == value
    flag = args[-2] if len(args) > 1 and not args[-1].startswith("-") else args[-1]
    notices = [line for line in r.output.splitlines() if "deprecated" in line]
    assert notices[-1].startswith(f"{flag} is deprecated; use --set {key}="), r.output
    assert len(notices) == len([a for a in args if a.startswith("--")])
    # What the notice suggests gives the same setting.
    from aelab.tasks.options import coerce, field_types

    suggested = notices[-1].split("use --set ", 1)[1]
    others = args[:-2] if len(args) > 2 else []
    r = runner.invoke(app, [*command.split(), "x.npz", *_REQUIRED[command], *others,
                            "--set", suggested])  # fmt: skip
    assert isinstance(r.exception, _Called), r.output
    hint = field_types(_listings()[command])[key]
    assert coerce(r.exception.kwargs[key], hint, key) == coerce(value, hint, key)
