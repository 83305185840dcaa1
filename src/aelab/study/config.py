"""The study's configuration: one TOML file, every knob with a documented default.

``aelab study --print-config`` prints :data:`DEFAULT_TOML`; a user copies it,
edits what they need and passes the file back. Unknown keys are errors, so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

#: The defaults, as the TOML a user edits. Comments say what each knob does.
DEFAULT_TOML = """\
# aelab study configuration. Every key is optional; these are the defaults.
seed = 0
device = "auto"          # auto (CUDA when present), cpu, cuda, cuda:N

[data]
source = "fashion-mnist"         # image folder, .npy/.npz, or fashion-mnist (the built-in demo data)
test = "fashion-mnist:test"      # images to predict into submission.csv; "" to skip
model = "auto"                   # a registered model; auto: convae at the data's size (convae_fmnist for 28x28 gray)
image_size = 0                   # 0: the model's own size
max_images = 20000               # cap on images used for pre-training (0: all)
labels_per_class = 100           # labeled images per class for fine-tuning
val_per_class = 100              # validation images per class
max_test = 0                     # cap on predicted test images (0: all)

[pretrain]
epochs = 4
batch_size = 128
lr = 0.002
loss = "mse"                     # mse, l1 or bce
augment = "none"                 # augmentation while pre-training: none or standard

[finetune]
epochs = 30
batch_size = 64
lr = 0.001
recon_weight = 0.0               # weight of the reconstruction loss kept on while fine-tuning
recipe = "plain"                 # fine-tuning recipe: plain (labels only) or default/fixmatch (also the unlabeled images, slower)
augment = ["standard", "none"]   # the ablation: one fine-tuning run per preset

[cluster]
classes = [0, 1, 2]              # three classes, as in the study
ratio = [2, 1, 1]                # their sizes, 2:1:1
n = 200                          # images in the subset
alpha = "target"                 # "target": search the alpha whose sizes best match ratio; "auto"; or a number
alpha_factors = [0.1, 1.0, 10.0] # the panels: these multiples of the chosen alpha
map = "tsne"                     # 2-D map: tsne, umap or pca
encoder = "finetune"             # whose latents: finetune (the best fine-tuned model) or pretrain

[anomaly]
normal_class = 0                 # class trained on as "normal"
anomalies = ""                   # another data source of anomalies; "": the other classes of the test set
max_anomalies = 1000             # cap on anomalous images scored
max_images = 0                   # cap on normal training images (0: all of the class)
epochs = 10
score = "mse"                    # mse, mae, ssim or latent
threshold = "fpr:0.05"           # fpr:R (on held-out normals), contamination:R, or a number

[reconstruct]
n = 8                            # images shown before and after fine-tuning
"""

#: ``--quick``: the same study, smaller. Applied on top of the defaults and the user's file.
QUICK_OVERRIDES: dict[str, dict[str, Any]] = {
    "data": {"max_images": 2000, "labels_per_class": 20, "val_per_class": 20, "max_test": 1000},
    "pretrain": {"epochs": 2},
    "finetune": {"epochs": 6},
    "cluster": {"n": 120},
    "anomaly": {"epochs": 3, "max_anomalies": 300, "max_images": 1000},
}


def default_config() -> dict[str, Any]:
    """The defaults as a nested dict."""
    return tomllib.loads(DEFAULT_TOML)


def _merge(base: dict[str, Any], new: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in new.items():
        path = f"{where}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ValueError(f"unknown config key {path!r}; known keys here: {known}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ValueError(f"config key {path!r} must be a table ([{path}])")
            out[key] = _merge(base[key], value, f"{path}.")
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None, *, quick: bool = False, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Defaults, then the user's TOML file, then ``--quick``, then ``overrides``.

    Raises
    ------
    ValueError
        For a file that is not TOML or a key that does not exist.
    """
    cfg = default_config()
    if path is not None:
        p = Path(path)
        try:
            user = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{p}: not valid TOML ({e})") from None
        cfg = _merge(cfg, user)
    if quick:
        cfg = _merge(cfg, QUICK_OVERRIDES)
    if overrides:
        cfg = _merge(cfg, overrides)
    return cfg


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_config(cfg: dict[str, Any]) -> str:
    """A config dict (scalars, lists, one level of tables) as TOML text."""
    top = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    tables = [
        f"\n[{k}]\n" + "\n".join(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())
        for k, v in cfg.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n" + "\n".join(tables) + "\n"
