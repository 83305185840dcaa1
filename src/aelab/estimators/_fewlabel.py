"""The few-label classifier: ``fit(X, y)`` with ``y == -1`` for the images nobody labelled."""

from __future__ import annotations

import dataclasses
from numbers import Integral
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from aelab.estimators._autoencoder import ROUTED, AutoencoderTransformer, model_overrides
from aelab.estimators._params import PartParams
from aelab.estimators._torch import (
    INFER_BATCH,
    PicklesModel,
    as_images,
    at_shape,
    image_tags,
    load_folder,
    save_folder,
    temporary_run,
    write_model,
)

__all__ = ["FewLabelClassifier"]

_KIND = "aelab.FewLabelClassifier"
#: The label of an image without one (scikit-learn's semi-supervised convention).
UNLABELED = -1


class FewLabelClassifier(PicklesModel, ClassifierMixin, PartParams):
    """Classify images from few labels: pre-train an autoencoder, then fine-tune it with FixMatch.

    ``fit(X, y)`` reads ``y == -1`` as "unlabeled" (as scikit-learn's
    :class:`~sklearn.semi_supervised.SelfTrainingClassifier` does) and runs the
    tasks the command line runs: ``aelab pretrain`` on every image of ``X``
    (:func:`aelab.tasks.run_pretrain`), then ``aelab finetune --init`` with the
    ``recipe`` (:func:`aelab.tasks.run_finetune`; the default recipe is
    FixMatch, which learns from the unlabeled images too). On the same images,
    labels and seed it trains the same weights as those two commands whenever
    both hold out the same validation images: the CLI takes them from a fully
    labelled set before it hides labels, this from the labelled images
    (``tests/test_estimators.py`` checks both ways: ``y == -1`` without
    validation against ``--labels-per-class 6 --val-fraction 0``, and every
    image labelled with the default validation).

    Validation: as the CLI holds out ``val_fraction`` (0.1) of each class's
    labelled images (or ``val_per_class`` per class) to pick the best epoch,
    this holds out ``finetune__val_fraction`` of each class's labelled images
    (``finetune__val_per_class`` per class when set), by the same seeded
    split (:func:`aelab.data.split_indices`); a class with 5 labelled
    images or fewer gives none (10 % rounds to 0). The rows held out are
    ``validation_index_``. Every image not held out, the labelled ones
    included, is in the unlabeled pool, as on the command line.
    ``finetune__val_fraction=0`` uses every labelled image for training.

    Parameters
    ----------
    init : AutoencoderTransformer or None, default=None
        Start from this autoencoder instead of pre-training one: a fitted one
        is used as it is (wrap it in :class:`sklearn.frozen.FrozenEstimator`
        to keep it fitted through :func:`~sklearn.base.clone`); an unfitted
        one is fitted (a clone of it) on ``X``. ``None``: pre-train here, with
        ``model``, ``pretrain__`` and ``model__`` settings (ignored with ``init``).
    model : str, default="auto"
        The registered model to pre-train (``"auto"``: the ``convae`` member that suits the images).
    recipe : str, default="default"
        The named fine-tuning settings (``aelab finetune --recipe``):
        ``"default"`` (= ``"fixmatch"``) or ``"plain"`` (labelled images only).
    random_state : int, default=0
        Seed of the splits, the initial weights and the batch order of both
        steps (the CLI's ``--seed``; fitting seeds the global generators, as the CLI does).
    device : str, default="auto"
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``, for training and inference.
    verbose : bool, default=False
        Show progress bars and a line per epoch.
    **parts
        Settings of the parts, by prefix (listed by ``get_params``, changed by
        ``set_params``, checked by ``fit``): ``pretrain__<field>`` of
        :class:`aelab.tasks.PretrainOptions` (``pretrain__epochs=1``),
        ``finetune__<field>`` of :class:`aelab.tasks.FinetuneOptions`
        (``finetune__lr``, ``finetune__epochs``, ``finetune__val_fraction``...;
        they override the recipe's values, as the CLI's ``--set`` does), and
        ``model__<field>`` of the model's config (``model__latent_dim=64``).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The classes of the labelled images (never -1).
    model_ : torch.nn.Module
        The fine-tuned model (the weights of the best epoch by validation accuracy).
    model_name_ : str
    image_shape_ : tuple of int
        (channels, height, width) of the images it takes.
    transduction_ : ndarray of shape (n_samples,)
        The label of every training image: the given one, or the predicted one where ``y`` was -1.
    validation_index_ : ndarray of shape (n_validation,), int64
        Rows of ``X`` held out for validation.
    pretrain_history_, history_ : list of dict
        One row per epoch of pre-training (empty with a fitted ``init``) and of fine-tuning.
    best_epoch_ : int or None
        The fine-tuning epoch whose weights ``model_`` holds.

    Notes
    -----
    ``X`` is an array of images (n_samples, height, width[, channels]), uint8
    or floats in [0, 1], not a 2-D table; the scikit-learn checks that feed
    2-D tables do not apply (``tests/test_estimators.py`` lists them and why).
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "init": [None, HasMethods(["fit", "transform"])],
        "model": [str],
        "recipe": [str],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "device": [str],
        "verbose": ["verbose"],
    }
    _parts: ClassVar[dict[str, str]] = {
        "pretrain": "fields of aelab.tasks.PretrainOptions",
        "finetune": "fields of aelab.tasks.FinetuneOptions",
        "model": "fields of the model's config",
    }
    _routed: ClassVar[dict[str, str]] = {
        **{f"{part}__{k}": v for part in ("pretrain", "finetune") for k, v in ROUTED.items()},
        "finetune__labels_per_class": "the labels are y (-1 marks an image without one)",
    }

    def __init__(
        self,
        init: Any = None,
        *,
        model: str = "auto",
        recipe: str = "default",
        random_state: int = 0,
        device: str = "auto",
        verbose: bool = False,
        **parts: Any,
    ) -> None:
        self.init = init
        self.model = model
        self.recipe = recipe
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self._store_parts(parts)

    def __sklearn_tags__(self) -> Any:
        return image_tags(super().__sklearn_tags__())

    def _finetune_options(self) -> Any:
        """The :class:`~aelab.tasks.FinetuneOptions` of this fit: the recipe's, then ``finetune__``."""
        from aelab.tasks import finetune_options, with_overrides

        given = {
            **self._part("finetune"), "seed": self.random_state, "device": self.device,
            "progress": bool(self.verbose),
        }  # fmt: skip
        return with_overrides(finetune_options(self.recipe), given, where="finetune__")

    def _autoencoder(self, images: Any) -> tuple[AutoencoderTransformer, bool]:
        """The fitted autoencoder fine-tuning starts from, and whether it was trained here."""
        if self.init is None:
            given = self._part("pretrain")
            parts = {f"pretrain__{k}": v for k, v in given.items() if k != "epochs"}
            parts.update((f"model__{k}", v) for k, v in (model_overrides(self) or {}).items())
            ae = AutoencoderTransformer(
                self.model, epochs=given.get("epochs"), random_state=self.random_state,
                device=self.device, verbose=self.verbose, **parts,
            )  # fmt: skip
            return ae.fit(images), True
        # A FrozenEstimator keeps the fitted estimator as .estimator.
        inner = getattr(self.init, "estimator", self.init)
        if not isinstance(inner, AutoencoderTransformer):
            raise ValueError(
                f"init must be an AutoencoderTransformer (fitted, or to fit on X) or None, "
                f"got {type(inner).__name__}"
            )
        if hasattr(inner, "model_"):
            return inner, False
        return clone(inner).fit(images), True

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any) -> FewLabelClassifier:
        """Pre-train on every image of ``X``, then fine-tune on the labelled ones (and the rest).

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width[, channels])
            uint8 images, or floats in [0, 1].
        y : array-like of shape (n_samples,)
            The class of each image, -1 for an image without a label (an
            object array when the classes are strings).

        Returns
        -------
        self
        """
        from aelab.tasks import run_finetune
        from aelab.training import load_model

        images = as_images(X)
        classes, codes = _encode_labels(y, len(images))
        opts = self._finetune_options()
        splits = _split(images, codes, [str(c) for c in classes], opts)  # refused before training
        ae, trained = self._autoencoder(images)
        with temporary_run() as tmp:
            init = write_model(
                Path(tmp) / "init", ae.model_, ae.model_name_,
                {"task": "pretrain", "image_shape": list(ae.image_shape_), "class_names": None},
            )  # fmt: skip
            # The split is done (val_per_class took effect above); the task refuses to split again.
            config = dataclasses.replace(opts, val_per_class=0)
            result = run_finetune(splits, tmp, config, init=init, recipe=self.recipe)
            model, _ = load_model(result.run_dir, device="cpu")
        self.classes_ = classes
        self.model_ = model
        self.model_name_ = result.model
        self.image_shape_ = ae.image_shape_
        self.pretrain_history_ = list(ae.history_) if trained else []
        self.history_ = [dict(row) for row in result.history]
        self.best_epoch_ = result.best_epoch
        self.validation_index_ = splits.val_index
        guessed = self.predict(images) if (codes == UNLABELED).any() else None
        self.transduction_ = _transduction(y, codes, guessed)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the classifier head).

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width[, channels])

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes), float64
            Columns in the order of ``classes_``.
        """
        from aelab.training import predict

        check_is_fitted(self, "model_")
        images = at_shape(X, self.image_shape_)
        _, probs = predict(self.model_, images, batch_size=INFER_BATCH, device=self.device)
        return probs.astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each image.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width[, channels])

        Returns
        -------
        y : ndarray of shape (n_samples,)
            Values of ``classes_``.
        """
        proba = self.predict_proba(X)  # first: it says when the classifier is not fitted
        return self.classes_[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> Path:
        """Write the fitted classifier to ``directory``: a model checkpoint (safetensors) and JSON.

        Nothing is pickled. ``init`` is not saved (it only matters to ``fit``):
        the loaded classifier predicts the same, and has ``init=None``.
        ``classes_`` must be numbers or text.
        """
        check_is_fitted(self, "model_")
        if self.classes_.dtype.kind not in "iufUSO":
            raise ValueError(f"classes of dtype {self.classes_.dtype} cannot be saved as JSON")
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "init"}
        record = {
            "params": params, "classes_": self.classes_.tolist(),
            "classes_dtype": self.classes_.dtype.str, "model_name_": self.model_name_,
            "image_shape_": list(self.image_shape_), "pretrain_history_": self.pretrain_history_,
            "history_": self.history_, "best_epoch_": self.best_epoch_,
            "validation_index_": self.validation_index_.tolist(),
            "transduction_": self.transduction_.tolist(),
        }  # fmt: skip
        return save_folder(directory, _KIND, self.model_, self.model_name_, record)

    @classmethod
    def load(cls, directory: str | Path) -> FewLabelClassifier:
        """Rebuild a classifier written by :meth:`save` (with ``init=None``).

        Raises
        ------
        ValueError
            When ``directory`` holds no saved FewLabelClassifier.
        """
        record, model = load_folder(directory, _KIND)
        est = cls(**record["params"])
        dtype = np.dtype(record["classes_dtype"])
        est.classes_ = np.asarray(record["classes_"], dtype=dtype)
        est.model_ = model
        est.model_name_ = str(record["model_name_"])
        est.image_shape_ = tuple(int(v) for v in record["image_shape_"])
        est.pretrain_history_ = list(record["pretrain_history_"])
        est.history_ = list(record["history_"])
        est.best_epoch_ = record["best_epoch_"]
        est.validation_index_ = np.asarray(record["validation_index_"], dtype=np.int64)
        est.transduction_ = np.asarray(record["transduction_"], dtype=dtype)
        return est


def _encode_labels(y: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)``: the sorted classes of the labelled rows, each row's index (-1: none)."""
    y = column_or_1d(y, warn=True)
    if len(y) != n:
        raise ValueError(f"y has {len(y)} labels for {n} images; give one per image")
    if y.dtype.kind in "US":
        raise ValueError(
            "y holds strings, where -1 cannot mark an unlabeled image; "
            "use an object array (np.array(labels, dtype=object)) with -1 for those images"
        )
    unlabeled = np.array([v == UNLABELED for v in y.tolist()], dtype=bool)
    known = y[~unlabeled]
    if known.size == 0:
        raise ValueError("y has no labelled image (all are -1); label at least two classes")
    check_classification_targets(known)
    classes, codes = np.unique(known, return_inverse=True)
    if classes.size < 2:
        raise ValueError(f"y has one class ({classes[0]!r}); a classifier needs at least two")
    out = np.full(n, UNLABELED, dtype=np.int64)
    out[~unlabeled] = codes.reshape(-1)
    return classes, out


def _split(images: Any, codes: np.ndarray, names: list[str], opts: Any) -> Any:
    """The fine-tuning parts: validation out of the labelled rows, the CLI's rule (class docstring)."""
    import torch

    from aelab.data import Splits, split_indices

    def part(rows: np.ndarray, labelled: bool) -> Any:
        ds = images.subset(rows)
        if labelled:
            ds.labels = torch.from_numpy(codes[rows])
            ds.class_names = names  # every class, even one with no row in this part
        return ds

    labelled = np.flatnonzero(codes != UNLABELED)
    train_idx, _, val_idx = split_indices(
        part(labelled, True), val_fraction=opts.val_fraction,
        val_per_class=opts.val_per_class or None, seed=opts.seed,
    )  # fmt: skip
    assert train_idx is not None
    train_rows, val_rows = labelled[train_idx], labelled[val_idx]
    pool = np.setdiff1d(np.arange(len(images)), val_rows)
    return Splits(
        labeled=part(train_rows, True), unlabeled=part(pool, False),
        val=part(val_rows, True) if val_rows.size else None, labeled_index=train_rows,
        unlabeled_index=pool, val_index=val_rows,
    )  # fmt: skip


def _transduction(y: Any, codes: np.ndarray, guessed: np.ndarray | None) -> np.ndarray:
    """The given labels, with the predicted ones where none was given."""
    y = column_or_1d(y)
    if guessed is None:
        return y.copy()
    out = np.asarray(y, dtype=np.result_type(y.dtype, guessed.dtype)).copy()
    out[codes == UNLABELED] = guessed[codes == UNLABELED]
    return out
