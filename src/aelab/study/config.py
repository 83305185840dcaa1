"""The study's configuration: one TOML file whose sections are the tasks' own configs.

Every section is read into a config dataclass: ``[pretrain]`` is a
:class:`~aelab.tasks.PretrainOptions`, ``[finetune]`` a recipe plus
:class:`~aelab.tasks.FinetuneOptions` fields, ``[cluster]`` adds the subset to
:class:`~aelab.tasks.ClusterOptions`, ``[anomaly]`` adds the anomalies to
:data:`~aelab.tasks.AnomalyFitOptions`. So each setting is declared once, in
its dataclass, and any of its fields may appear in the file; unknown keys are
errors. ``aelab study --print-config`` prints the keys a user most often
changes, with their values and a comment each.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from aelab.data import PRESETS
from aelab.study.constraints import Checked, Rule, at_least, between, list_of, one_of, parses
from aelab.tasks import (
    AnomalyFitOptions,
    ClusterOptions,
    FinetuneOptions,
    PretrainOptions,
    finetune_options,
    with_overrides,
)
from aelab.tasks.cluster import sweep_alphas
from aelab.tasks.options import coerce
from aelab.training import FINETUNE_RECIPES

__all__ = [
    "QUICK_OVERRIDES",
    "AnomalySection",
    "ClusterSection",
    "DataSection",
    "FinetuneSection",
    "StudyConfig",
    "default_toml",
    "dump_config",
    "load_config",
]


@dataclass
class DataSection(Checked):
    """``[data]``: the user's images, the test set, and the one split of the study.

    Parameters
    ----------
    source : str
        Labelled images: a folder with one subfolder per class, an ``.npz``
        with labels, or ``fashion-mnist`` (the demo data).
    test : str
        Images to predict into ``submission.csv``: ``"auto"`` takes
        Fashion-MNIST's test split for the demo data and otherwise holds out
        ``test_fraction`` of each class of ``source``; or another data spec.
    test_fraction : float
        Share of each class held out as the test set when ``test = "auto"``
        and the source has no test split of its own.
    labels_per_class, val_per_class : int
        Labelled training and validation images per class.
    max_test : int
        Cap on predicted test images (0: all).
    unlabeled : str
        More images without labels (a flat folder or an ``.npy``/``.npz``
        array; labels in it ignored): pre-training and FixMatch use them
        beside the images of ``source`` not labelled. Empty: none.
    """

    source: str = "fashion-mnist"
    test: str = "auto"
    test_fraction: float = 0.2
    labels_per_class: int = 100
    val_per_class: int = 100
    max_test: int = 0
    unlabeled: str = ""

    rules: ClassVar[dict[str, Rule]] = {
        "test_fraction": between(0, 1),
        "labels_per_class": at_least(1),  # the study fine-tunes on labels
        "val_per_class": at_least(0),
        "max_test": at_least(0),
    }


#: What ``[finetune] submit`` may name: the run of the default recipe, or the best ablation run.
SUBMIT = ("default", "ablation")


@dataclass
class FinetuneSection(Checked):
    """``[finetune]``: the augmentation ablation, the default-recipe run, and which one submits.

    ``recipe`` names the starting settings of the ablation (see
    :data:`aelab.training.FINETUNE_RECIPES`); ``ablation`` lists the
    augmentation presets, one fine-tuning run each; ``settings`` holds every
    other field of :class:`~aelab.tasks.FinetuneOptions` for those runs.
    ``submit = "default"`` adds one run of the default recipe (FixMatch) from
    the same pre-trained encoder, with the settings ``default`` (the TOML
    table ``[finetune.default]``), and it writes ``submission.csv`` and gives
    the cluster and reconstruct steps their encoder; ``"ablation"`` leaves that
    run out and submits the ablation run of best validation accuracy.
    ``max_unlabeled`` caps the unlabeled pool of the runs that learn from it
    (0: all the images not labelled, plus ``data.unlabeled``).
    """

    recipe: str = "plain"
    ablation: list[str] = field(default_factory=lambda: ["standard", "none"])
    settings: FinetuneOptions = field(default_factory=lambda: finetune_options("plain"))
    submit: str = "default"
    max_unlabeled: int = 0
    default: FinetuneOptions = field(default_factory=lambda: finetune_options("default"))

    rules: ClassVar[dict[str, Rule]] = {
        "recipe": one_of(FINETUNE_RECIPES),
        "submit": one_of(SUBMIT),
        "max_unlabeled": at_least(0),
        # One fine-tuning run (and step) per preset: at least one, each once.
        "ablation": list_of(
            one_of(PRESETS),
            empty=False,
            unique=True,
            must=f"a non-empty list of augmentation presets ({', '.join(PRESETS)}), each once",
        ),  # fmt: skip
    }


@dataclass
class ClusterSection(Checked):
    """``[cluster]``: EKM on a subset of classes in a ratio, at the alpha that fits it.

    Parameters
    ----------
    classes : list of int or str
        The classes clustered; empty: the first three (or every class when there are fewer).
    ratio : list of float
        Their sizes; empty: 2:1:1 (2:1 for two classes).
    n : int
        Images in the subset, at most (fewer when the classes have fewer test images).
    search : bool
        Search the alpha whose cluster sizes fit ``ratio`` best, then show
        ``sweep`` multiples of it (the study's "tune alpha until 2:1:1").
    sweep : str
        The alphas shown side by side.
    encoder : {"finetune", "pretrain"}
        Whose latents: the best fine-tuned model or the pre-trained one.
    settings : ClusterOptions
        Every other EKM setting (``map``, ``space``, ``n_init``...); ``k`` and
        ``target_ratio`` come from ``classes`` and ``ratio``.
    """

    classes: list[int | str] = field(default_factory=list)
    ratio: list[float] = field(default_factory=list)
    n: int = 200
    search: bool = True
    sweep: str = "0.1x,1x,10x"
    encoder: str = "finetune"
    settings: ClusterOptions = field(default_factory=lambda: ClusterOptions(k=1))

    rules: ClassVar[dict[str, Rule]] = {
        "ratio": list_of(Rule(lambda v: at_least(0).test(v) and v > 0, "numbers > 0")),
        "n": at_least(1),
        "sweep": parses(lambda v: v == "" or sweep_alphas(v, 1.0), "alphas such as 0.1x,1x,10x"),
        "encoder": one_of(("finetune", "pretrain")),
    }


@dataclass
class AnomalySection(Checked):
    """``[anomaly]``: a detector trained on one class, tested on the others or on other data.

    Parameters
    ----------
    normal_class : int or str
        The class trained on as normal (index or name).
    anomalies : str
        Another data source of anomalies; empty: the other classes of the test set.
    max_anomalies : int
        Cap on the normal and anomalous test images scored (0: all).
    settings : AnomalyFitOptions
        The detector's settings (:class:`~aelab.anomaly.ReconstructionDetector`'s
        parameters, its defaults) and ``max_images``.
    """

    normal_class: int | str = 0
    anomalies: str = ""
    max_anomalies: int = 1000
    settings: Any = field(default_factory=lambda: AnomalyFitOptions())

    rules: ClassVar[dict[str, Rule]] = {"max_anomalies": at_least(0)}


@dataclass
class StudyConfig(Checked):
    """The whole study: ``seed`` and ``device`` for every step, then one section per step."""

    seed: int = 0
    device: str = "auto"
    data: DataSection = field(default_factory=DataSection)
    pretrain: PretrainOptions = field(
        default_factory=lambda: PretrainOptions(epochs=4, max_images=20000)
    )
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    cluster: ClusterSection = field(default_factory=ClusterSection)
    anomaly: AnomalySection = field(default_factory=AnomalySection)
    reconstruct_n: int = 8

    rules: ClassVar[dict[str, Rule]] = {"seed": at_least(0), "reconstruct_n": at_least(1)}
    shown: ClassVar[dict[str, str]] = {"reconstruct_n": "reconstruct.n"}


#: ``--quick``: the same study, smaller. Applied on top of the defaults, below the user's file
#: and flags: a value the user wrote wins over the preset's.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "data": {"labels_per_class": 20, "val_per_class": 20, "max_test": 1000},
    "pretrain": {"epochs": 2, "max_images": 2000},
    # The default-recipe run: 3 epochs of 60 steps at batch 32 over at most 1,000 unlabeled
    # images, not the recipe's 3 x 250 steps at batch 64 over every image (the report says so).
    # Chosen on the study's validation split (Fashion-MNIST, quick, seed 0, quiet 2 cores):
    # 2 x 11 steps gave val 0.595 (test 0.631) in 3 s, below plain's val 0.685; 3 x 60 at
    # batch 32 val 0.740 (test 0.710) in 22 s, a 50 s study; 3 x 120 at batch 64 val 0.770
    # in 80 s, a 105 s study, too close to the 3-minute budget on a loaded machine.
    "finetune": {
        "epochs": 6,
        "max_unlabeled": 1000,
        "default": {"epochs": 3, "min_epoch_steps": 60, "batch_size": 32},
    },
    "cluster": {"n": 120},
    # A floor of 150 steps, not the default 600: the quick study is a preview.
    "anomaly": {"epochs": 3, "min_steps": 150, "max_anomalies": 300, "max_images": 1000},
}

# Keys of a section read into the section itself; every other key is a field of its settings.
_OWN = {
    "finetune": ("recipe", "ablation", "submit", "max_unlabeled"),
    "cluster": ("classes", "ratio", "n", "search", "sweep", "encoder"),
    "anomaly": ("normal_class", "anomalies", "max_anomalies"),
}
# Settings the study decides itself (from the top-level keys or from the data).
_DERIVED = {
    "pretrain": ("seed", "device"),
    "finetune": ("seed", "device", "labels_per_class", "val_per_class", "val_fraction", "augment"),
    "cluster": ("k", "target_ratio", "seed", "sweep"),
    "anomaly": ("random_state", "device", "normal_class"),
}
_WHY = {
    "seed": "set the top-level seed",
    "device": "set the top-level device",
    "random_state": "set the top-level seed",
    "labels_per_class": "set data.labels_per_class (the study splits once)",
    "val_per_class": "set data.val_per_class (the study splits once)",
    "val_fraction": "the study splits by data.val_per_class",
    "augment": "list the presets in finetune.ablation",
    "k": "list the classes in cluster.classes",
    "target_ratio": "set cluster.ratio (and cluster.search)",
    "normal_class": "set anomaly.normal_class",
}


def _refuse_derived(section: str, values: dict[str, Any]) -> None:
    for key in _DERIVED.get(section, ()):
        if key in values and not (section in _OWN and key in _OWN[section]):
            raise ValueError(f"{section}.{key} is not set in [{section}]: {_WHY[key]}")


def _section(name: str, current: Any, values: dict[str, Any]) -> Any:
    """``current`` (a section dataclass) with the TOML ``values`` of ``[name]`` applied."""
    if not isinstance(values, dict):
        raise ValueError(f"config key {name!r} must be a table ([{name}])")
    _refuse_derived(name, values)
    if name in ("data",):
        return with_overrides(current, values, where=f"{name}.")
    if name == "pretrain":
        return with_overrides(current, values, where="pretrain.")
    run = values.get("default") if name == "finetune" else None
    values = {k: v for k, v in values.items() if not (name == "finetune" and k == "default")}
    own = {k: values[k] for k in _OWN[name] if k in values}
    rest = {k: v for k, v in values.items() if k not in own}
    section = with_overrides(current, own, where=f"{name}.")
    if run is not None:
        section = dataclasses.replace(section, default=_default_run(section.default, run))
    settings = section.settings
    if name == "finetune" and "recipe" in own:
        # A recipe replaces the settings it names; fields given beside it win.
        settings = finetune_options(section.recipe)
    settings = with_overrides(settings, rest, where=f"{name}.")
    return dataclasses.replace(section, settings=settings)


def _default_run(current: FinetuneOptions, values: Any) -> FinetuneOptions:
    """``[finetune.default]``: the default-recipe run's settings with the TOML ``values`` applied."""
    if not isinstance(values, dict):
        raise ValueError("finetune.default must be a table ([finetune.default]) of settings")
    for key in ("seed", "device", "labels_per_class", "val_per_class", "val_fraction"):
        if key in values:
            raise ValueError(
                f"finetune.default.{key} is not set in [finetune.default]: {_WHY[key]}"
            )
    return with_overrides(current, values, where="finetune.default.")


def _apply(cfg: StudyConfig, table: dict[str, Any]) -> StudyConfig:
    top = {k: v for k, v in table.items() if not isinstance(v, dict)}
    cfg = with_overrides(cfg, {k: v for k, v in top.items() if k != "reconstruct"}, where="")
    changes: dict[str, Any] = {}
    for name, values in table.items():
        if not isinstance(values, dict):
            continue
        if name == "reconstruct":
            extra = set(values) - {"n"}
            if extra:
                raise ValueError(
                    f"unknown setting 'reconstruct.{sorted(extra)[0]}'; known settings: n"
                )
            changes["reconstruct_n"] = coerce(
                values.get("n", cfg.reconstruct_n), int, "reconstruct.n"
            )
            continue
        if name not in ("data", "pretrain", "finetune", "cluster", "anomaly"):
            known = "data, pretrain, finetune, cluster, anomaly, reconstruct"
            raise ValueError(f"unknown config section [{name}]; known sections: {known}")
        changes[name] = _section(name, changes.get(name, getattr(cfg, name)), values)
    return dataclasses.replace(cfg, **changes)


def _read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such config file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid TOML ({e})") from None


def _under(preset: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """``user``'s table with the ``preset``'s values where it has none (tables merged, nested too)."""
    merged = dict(user)
    for key, value in preset.items():
        mine = user.get(key)
        if key not in user:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(mine, dict):
            merged[key] = _under(value, mine)
    return merged


def _leaves(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"finetune.default.epochs": 2, ...}``: every value of a nested table by its dotted key."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _preset_line(user: dict[str, Any], overrides: dict[str, Any]) -> str:
    """The ``--quick`` values used and those the user's own values replaced, in one line."""
    used, mine = [], []
    given_keys = set(_leaves(user)) | set(_leaves(overrides))
    for key, value in _leaves(QUICK_OVERRIDES).items():
        given = key in given_keys
        (mine if given else used).append(key + ("" if given else f"={value}"))
    line = "[quick] preset values used: " + (", ".join(used) or "none")
    return line + (f" (yours kept: {', '.join(mine)})" if mine else "")


def load_config(
    path: str | Path | None = None,
    *,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> StudyConfig:
    """The defaults, then ``--quick``, then the user's TOML file, then ``overrides`` (same layout).

    What the user wrote (the file, the flags in ``overrides``) wins over the
    ``--quick`` preset; ``log`` receives one line naming the preset values used.

    Raises
    ------
    ValueError
        For a file that is not TOML, an unknown key, or a value that does not fit.
    """
    user = {} if path is None else _read_toml(path)
    table = _under(QUICK_OVERRIDES, user) if quick else user
    cfg = _apply(StudyConfig(), table)
    if overrides:
        cfg = _apply(cfg, overrides)
    if quick and log is not None:
        log(_preset_line(user, overrides or {}))
    return cfg


# ----------------------------------------------------------------------------- writing

#: The keys ``--print-config`` shows, each with a comment; values come from the dataclasses.
_SHOWN: dict[str, list[tuple[str, str]]] = {
    "": [("seed", "every step's seed"), ("device", "auto (CUDA when present), cpu, cuda, cuda:N")],
    "data": [
        ("source", "labelled images: folder (one subfolder per class), .npz, or fashion-mnist"),
        (
            "test",
            "auto: fashion-mnist's test split, else test_fraction of each class held out; or a data spec",
        ),
        ("test_fraction", "share of each class held out as the test set (test = auto, own data)"),
        ("labels_per_class", "labelled images per class for fine-tuning"),
        ("val_per_class", "validation images per class"),
        ("max_test", "cap on predicted test images (0: all)"),
        ("unlabeled", 'more images without labels (flat folder or .npy/.npz); "": none'),
    ],
    "pretrain": [
        ("model", "a registered model; auto: the convae member for the data's size"),
        ("epochs", "passes over the pre-training images"),
        ("max_images", "cap on pre-training images (0: all)"),
        ("batch_size", ""),
        ("lr", ""),
        ("loss", "mse, l1 or bce"),
        ("mask_ratio", "masked-patch pre-training: share of 4x4 squares hidden (0: off)"),
    ],
    "finetune": [
        ("recipe", "the ablation's recipe: plain (labels only) or default/fixmatch"),
        ("ablation", "one fine-tuning run per augmentation preset"),
        ("epochs", ""),
        ("batch_size", ""),
        ("lr", ""),
        ("recon_weight", "weight of the reconstruction loss kept on while fine-tuning"),
        ("submit", "who writes submission.csv: default (a default-recipe run) or ablation"),
        ("max_unlabeled", "cap on the unlabeled images FixMatch learns from (0: all)"),
    ],
    # The run of the default recipe (FixMatch) from the same encoder (submit = "default").
    "finetune.default": [
        ("epochs", "passes over the unlabeled images"),
        ("min_epoch_steps", "an epoch is at least this many steps"),
        ("batch_size", "labelled images per step"),
        ("lr", ""),
    ],
    "cluster": [
        ("classes", "the classes clustered; []: the first three (or all, when fewer)"),
        ("ratio", "their sizes; []: 2:1:1 (2:1 for two classes)"),
        ("n", "images in the subset, at most"),
        ("search", "search the alpha whose cluster sizes fit the ratio"),
        ("sweep", "the alphas shown side by side (multiples of the chosen one)"),
        ("map", "2-D map: tsne, umap or pca"),
        ("encoder", "whose latents: finetune (the best fine-tuned model) or pretrain"),
    ],
    "anomaly": [
        ("normal_class", "the class trained on as normal"),
        ("anomalies", 'another data source of anomalies; "": the other classes of the test set'),
        ("max_anomalies", "cap on the normal and anomalous test images scored"),
        ("max_images", "cap on normal training images (0: all of the class)"),
        (
            "score",
            "auto: mse+latent+transform from 150 normal images, pixel below; or parts joined with +",
        ),
        ("epochs", ""),
        ("threshold", "fpr:R (on held-out normals), contamination:R, or a number"),
    ],
    "reconstruct": [("n", "images shown before and after fine-tuning")],
}


def _get(cfg: StudyConfig, section: str, key: str) -> Any:
    if section == "":
        return getattr(cfg, key)
    if section == "reconstruct":
        return cfg.reconstruct_n
    if section == "finetune.default":
        return getattr(cfg.finetune.default, key)
    obj = getattr(cfg, section)
    if hasattr(obj, "settings") and not hasattr(obj, key):
        obj = obj.settings
    return getattr(obj, key)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _changed(cfg: StudyConfig, section: str) -> list[tuple[str, Any]]:
    """Fields of a section's settings that differ from a fresh section's (so a dump reloads the same)."""
    if section in ("", "reconstruct"):
        return []
    if section == "finetune.default":
        a, b = cfg.finetune.default, finetune_options("default")
        skip = {k for k, _ in _SHOWN[section]} | set(_DERIVED["finetune"]) - {"augment"}
        return [(f.name, getattr(a, f.name)) for f in dataclasses.fields(a)
                if f.name not in skip and getattr(a, f.name) != getattr(b, f.name)]  # fmt: skip
    now, fresh = getattr(cfg, section), getattr(StudyConfig(), section)
    if section == "finetune":
        fresh = dataclasses.replace(fresh, settings=finetune_options(now.recipe))
    a = now.settings if hasattr(now, "settings") else now
    b = fresh.settings if hasattr(fresh, "settings") else fresh
    shown = {k for k, _ in _SHOWN[section]}
    skip = shown | set(_DERIVED.get(section, ()))
    return [(f.name, getattr(a, f.name)) for f in dataclasses.fields(a)
            if f.name not in skip and getattr(a, f.name) != getattr(b, f.name)]  # fmt: skip


def dump_config(cfg: StudyConfig, *, comments: bool = False) -> str:
    """The config as TOML that :func:`load_config` reads back to the same config."""
    lines: list[str] = []
    for section, keys in _SHOWN.items():
        if section:
            lines += ["", f"[{section}]"]
        entries = [(k, _get(cfg, section, k), doc) for k, doc in keys]
        entries += [(k, v, "") for k, v in _changed(cfg, section) if v is not None]
        for key, value, doc in entries:
            if value is None:
                continue
            text = f"{key} = {_toml_value(value)}"
            lines.append(f"{text:<32} # {doc}" if comments and doc else text)
    return "\n".join(lines).lstrip("\n") + "\n"


def default_toml() -> str:
    """The defaults as the commented TOML a user edits (``aelab study --print-config``)."""
    head = (
        "# aelab study configuration. Every key is optional; these are the defaults.\n"
        "# Each section also takes any other setting of its task (see the docs of\n"
        "# PretrainOptions, FinetuneOptions, ClusterOptions, ReconstructionDetector).\n"
    )
    return head + dump_config(StudyConfig(), comments=True)
