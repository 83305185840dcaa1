"""Everything the study decides from the data, checked before any training.

:func:`make_plan` loads the user's images once, brings them to the model's
shape, splits them once (test, validation, labelled, unlabeled), and derives
the settings that depend on the data (the classes clustered and their ratio,
the normal class, the anomalies). Every check runs here, so a study that
cannot run says why in one line, naming the setting, before any training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from aelab.data import ImageDataset, Splits
from aelab.study.config import StudyConfig

__all__ = ["StudyPlan", "make_plan"]

#: Fewest normal images the detector trains and calibrates on.
_MIN_NORMAL = 10


@dataclass
class StudyPlan:
    """The data of one study run, split once, and the settings derived from it.

    Attributes
    ----------
    config : StudyConfig
        The config with the derived settings filled in.
    source : ImageDataset
        The user's labelled images at the model's shape (the test part removed
        when the test set is held out of them).
    test : ImageDataset
        The images predicted into ``submission.csv``.
    test_name : str
        Where the test set came from.
    splits : Splits
        ``source`` split once: validation, labelled and unlabeled images.
    pretrain_images : ImageDataset
        What pre-training reads: the unlabeled split, plus ``data.unlabeled``'s images.
    pool_splits : Splits
        ``splits`` with the unlabeled pool of the runs that learn from one:
        the unlabeled split plus ``data.unlabeled``'s images, at most
        ``finetune.max_unlabeled`` of them (a seeded sample).
    model_name : str
    pool : ImageDataset
        Labelled images no step trained on (the test set when it has labels,
        else the validation split): the cluster subset and the anomaly test come from here.
    cluster_subset : ImageDataset
        The clustered images, relabelled 0..k-1 in the order of ``cluster_classes``.
    normal_train, normal_eval, anomalous_eval : ImageDataset
        The detector's training images (normal class, train part only), and the
        normal and anomalous images it is tested on.
    anomalies_name : str
    """

    config: StudyConfig
    source: ImageDataset
    test: ImageDataset
    test_name: str
    splits: Splits
    pretrain_images: ImageDataset
    pool_splits: Splits
    model_name: str
    pool: ImageDataset
    cluster_subset: ImageDataset
    normal_train: ImageDataset
    normal_eval: ImageDataset
    anomalous_eval: ImageDataset
    anomalies_name: str


def _named(setting: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a check; prefix its ValueError with the setting it is about."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        raise ValueError(f"{setting}: {e}") from None


def _load_source(cfg: StudyConfig) -> tuple[ImageDataset, str, tuple[int, int, int]]:
    from aelab.tasks.modeling import model_shape, new_model
    from aelab.tasks.source import load_images

    src = _named("data.source", load_images, cfg.data.source)
    if src.labels is None:
        raise ValueError(
            f"data.source: the study needs labelled images (one subfolder per class, or labels "
            f"in the .npz); {cfg.data.source} has none"
        )
    k = src.num_classes or 0
    if k < 2:
        raise ValueError(
            f"data.source: the study fine-tunes a classifier and needs at least 2 classes; "
            f"{cfg.data.source} has {k}"
        )
    net, name = _named("pretrain.model", new_model, src.image_shape, cfg.pretrain.model,
                       overrides=cfg.pretrain.model_overrides)  # fmt: skip
    shape = model_shape(net)
    return load_images(src, shape=shape), name, shape


def _test_set(
    cfg: StudyConfig, source: ImageDataset, shape: Any
) -> tuple[ImageDataset, ImageDataset, str]:
    """The test set and what remains of the source for training."""
    from aelab.data import split_dataset
    from aelab.tasks.source import load_images, subsample

    d = cfg.data
    if d.test != "auto":
        test = _named("data.test", load_images, d.test, shape=shape)
        name = d.test
        if test.labels is not None and test.class_names and source.class_names:
            if list(test.class_names) != list(source.class_names):
                raise ValueError(
                    f"data.test: its classes ({', '.join(test.class_names)}) differ from "
                    f"data.source's ({', '.join(source.class_names)}); give both the same classes"
                )
    elif d.source.strip().lower().split(":")[0] in ("fashion-mnist", "fashion_mnist", "fmnist"):
        test, name = load_images("fashion-mnist:test", shape=shape), "fashion-mnist:test"
    else:
        parts = _named(
            "data.test_fraction", split_dataset, source, val_fraction=d.test_fraction, seed=cfg.seed
        )
        test, name = parts.val, f"{d.test_fraction:g} of each class of {d.source}, held out"
        source = source.subset(parts.unlabeled_index)
        if test is None or len(test) == 0:
            raise ValueError(
                "data.test_fraction: no image was held out; raise it or give data.test"
            )
    return source, subsample(test, d.max_test, cfg.seed, name="data.max_test"), name


def _splits(cfg: StudyConfig, source: ImageDataset) -> Splits:
    from aelab.data import split_dataset

    d = cfg.data
    return _named(
        "data.labels_per_class / data.val_per_class", split_dataset, source,
        labels_per_class=d.labels_per_class, val_per_class=d.val_per_class or None, seed=cfg.seed,
    )  # fmt: skip


def _cluster(cfg: StudyConfig, pool: ImageDataset) -> tuple[StudyConfig, ImageDataset]:
    from aelab.data import select_classes

    c, k = cfg.cluster, pool.num_classes or 0
    classes = list(c.classes) or list(range(min(3, k)))
    ratio = list(c.ratio) or [2.0, 1.0, 1.0][: len(classes)] + [1.0] * max(0, len(classes) - 3)
    if len(ratio) != len(classes):
        raise ValueError(f"cluster.ratio has {len(ratio)} parts for {len(classes)} cluster.classes")
    if len(classes) < 2:
        raise ValueError("cluster.classes: give at least two classes to cluster")
    # As many images as the classes allow in this ratio, at most cluster.n.
    full = _named("cluster.classes", select_classes, pool, classes, ratio=ratio, seed=cfg.seed,
                  relabel=True)  # fmt: skip
    sub = (
        full
        if len(full) <= c.n
        else select_classes(pool, classes, ratio=ratio, n=c.n, seed=cfg.seed, relabel=True)
    )
    if np.bincount(sub.labels.numpy(), minlength=len(classes)).min() < 1:  # type: ignore[union-attr]
        raise ValueError(
            f"cluster.n: {len(sub)} images leave a class of cluster.classes empty; raise it"
        )
    settings = dataclasses.replace(
        c.settings,
        k=len(classes),
        target_ratio=ratio if c.search else None,
        seed=cfg.seed,
        sweep=c.sweep or None,
        alpha="auto" if c.search else c.settings.alpha,
    )
    section = dataclasses.replace(c, classes=classes, ratio=ratio, settings=settings)
    return dataclasses.replace(cfg, cluster=section), sub


def _anomaly(
    cfg: StudyConfig, train: ImageDataset, pool: ImageDataset, shape: Any
) -> tuple[Any, ...]:
    from aelab.tasks.source import class_index, load_images, split_by_class, subsample

    a = cfg.anomaly
    normal = _named("anomaly.normal_class", class_index, pool, a.normal_class)
    normal_train, _ = split_by_class(train, [normal])
    normal_train = subsample(
        normal_train, a.settings.max_images, cfg.seed, name="anomaly.max_images"
    )
    if len(normal_train) < _MIN_NORMAL:
        raise ValueError(
            f"anomaly.normal_class: class {pool.class_name(normal)!r} has {len(normal_train)} "
            f"training images; the detector needs at least {_MIN_NORMAL}"
        )
    normal_eval, rest = split_by_class(pool, [normal])
    if a.anomalies:
        anomalous, what = (
            _named("anomaly.anomalies", load_images, a.anomalies, shape=shape),
            a.anomalies,
        )
    else:
        anomalous, what = rest, "the other classes"
    normal_eval = subsample(normal_eval, a.max_anomalies, cfg.seed, name="anomaly.max_anomalies")
    anomalous = subsample(anomalous, a.max_anomalies, cfg.seed, name="anomaly.max_anomalies")
    if len(normal_eval) == 0 or len(anomalous) == 0:
        raise ValueError(
            f"anomaly.normal_class: the test images hold {len(normal_eval)} normal and "
            f"{len(anomalous)} anomalous images; both are needed"
        )
    settings = dataclasses.replace(
        a.settings, random_state=cfg.seed, device=cfg.device, normal_class=None
    )
    section = dataclasses.replace(a, normal_class=pool.class_name(normal), settings=settings)
    return dataclasses.replace(cfg, anomaly=section), normal_train, normal_eval, anomalous, what


def _unlabeled(cfg: StudyConfig, splits: Splits) -> tuple[ImageDataset, Splits]:
    """The pre-training images and the fine-tuning splits with FixMatch's pool (see StudyPlan)."""
    from aelab.tasks.source import subsample, with_unlabeled

    assert splits.unlabeled is not None
    more = cfg.data.unlabeled or None
    images = with_unlabeled(splits.unlabeled, more, name="data.unlabeled")
    pool = subsample(images, cfg.finetune.max_unlabeled, cfg.seed, name="finetune.max_unlabeled")
    return images, dataclasses.replace(splits, unlabeled=pool)


def make_plan(cfg: StudyConfig) -> StudyPlan:
    """Load, shape and split the data once; derive and check every data-dependent setting.

    Raises
    ------
    ValueError
        One line naming the setting that cannot work with this data, before any training.
    """
    cfg = dataclasses.replace(
        cfg, pretrain=dataclasses.replace(cfg.pretrain, seed=cfg.seed, device=cfg.device)
    )
    source, model_name, shape = _load_source(cfg)
    source, test, test_name = _test_set(cfg, source, shape)
    splits = _splits(cfg, source)
    pretrain_images, pool_splits = _unlabeled(cfg, splits)
    pool = test if test.labels is not None else splits.val
    if pool is None or pool.labels is None:
        raise ValueError("data.val_per_class: give validation images (the test set has no labels)")
    cfg, cluster_subset = _cluster(cfg, pool)
    train = source.subset(splits.unlabeled_index)
    cfg, normal_train, normal_eval, anomalous, what = _anomaly(cfg, train, pool, shape)
    ft, top = cfg.finetune, {"seed": cfg.seed, "device": cfg.device}
    cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(
        ft, settings=dataclasses.replace(ft.settings, **top),
        default=dataclasses.replace(ft.default, **top)))  # fmt: skip
    return StudyPlan(
        config=cfg, source=source, test=test, test_name=test_name, splits=splits,
        pretrain_images=pretrain_images, pool_splits=pool_splits, model_name=model_name, pool=pool, cluster_subset=cluster_subset,
        normal_train=normal_train, normal_eval=normal_eval, anomalous_eval=anomalous,
        anomalies_name=what,
    )  # fmt: skip
