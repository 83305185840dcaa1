"""The autoencoder as a scikit-learn transformer: images in, latent vectors out."""

from __future__ import annotations

from numbers import Integral
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from aelab.estimators._params import PartParams
from aelab.estimators._torch import (
    INFER_BATCH,
    PicklesModel,
    as_channels_last,
    as_images,
    at_shape,
    decode,
    image_tags,
    load_folder,
    save_folder,
    temporary_run,
)

__all__ = ["AutoencoderTransformer", "model_overrides"]

_KIND = "aelab.AutoencoderTransformer"

#: Settings that constructor parameters give (the same for both estimators).
ROUTED = {
    "seed": "set random_state",
    "device": "set device",
    "progress": "set verbose",
    "model": "set model",
    "model_overrides": "give the model's settings as model__<setting>, e.g. model__latent_dim=64",
}


def model_overrides(est: PartParams) -> dict[str, Any] | None:
    """The ``model__`` settings of ``est`` as the model config's overrides (``None``: none).

    Raises
    ------
    ValueError
        For a name that is no field of :class:`aelab.models.ConvAEConfig`.
    """
    import dataclasses

    from aelab.models import ConvAEConfig

    given = est._part("model")
    known = {f.name for f in dataclasses.fields(ConvAEConfig)}
    bad = sorted(set(given) - known)
    if bad:
        raise ValueError(
            f"model__{bad[0]} is not a setting of the model; known: "
            + ", ".join(f"model__{k}" for k in sorted(known))
        )
    return given or None


class AutoencoderTransformer(
    PicklesModel, ClassNamePrefixFeaturesOutMixin, TransformerMixin, PartParams
):
    """Pre-train a convolutional autoencoder on images; transform images to its latent vectors.

    ``fit`` runs the task ``aelab pretrain`` runs (:func:`aelab.tasks.run_pretrain`,
    in a temporary run folder removed afterwards), with the same defaults, so
    ``AutoencoderTransformer(random_state=0).fit(X)`` and
    ``aelab pretrain X.npy --out OUT`` train the same weights.

    Parameters
    ----------
    model : str, default="auto"
        A registered model (``aelab models``), or ``"auto"`` for the ``convae``
        member that suits the images. Images are brought to the model's size
        and channels (resized, converted) as on the command line.
    epochs : int or None, default=None
        Passes over the images; ``None`` keeps the CLI's default (10).
    random_state : int, default=0
        Seed of the held-out split, the initial weights and the batch order (the
        CLI's ``--seed``; fitting seeds Python's, NumPy's and torch's global
        generators with it, as the CLI does).
    device : str, default="auto"
        ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``;
        used for training and for inference.
    verbose : bool, default=False
        Show progress bars and a line per epoch.
    **parts
        Settings of the parts, by prefix: ``pretrain__<field>`` for any field of
        :class:`aelab.tasks.PretrainOptions` (``pretrain__lr``,
        ``pretrain__batch_size``, ``pretrain__augment``, ``pretrain__val_fraction``...,
        the CLI's ``--set`` keys) and ``model__<field>`` for the model's config
        (``model__latent_dim=64``). They are listed by ``get_params`` and
        changed by ``set_params``; ``fit`` checks them.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained autoencoder (the weights of the best epoch by held-out loss).
    model_name_ : str
        Its registry name.
    image_shape_ : tuple of int
        (channels, height, width) of the images it takes.
    history_ : list of dict
        One row per epoch (``train_loss``, ``val_loss``, ``lr``, ``time_s``...).

    Notes
    -----
    ``X`` is an array of images of shape (n_samples, height, width) or
    (n_samples, height, width, channels), uint8 or floats in [0, 1] (rounded
    to 1/255, as a ``.npy`` file on the command line), not a 2-D table: most
    of scikit-learn's estimator checks feed 2-D tables and do not apply
    (``tests/test_estimators.py`` lists them with the reason).

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from aelab.clustering import EquilibriumKMeans
    >>> pipe = make_pipeline(AutoencoderTransformer(epochs=1), EquilibriumKMeans(3))
    >>> labels = pipe.fit_predict(images)  # doctest: +SKIP
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "model": [str],
        "epochs": [Interval(Integral, 1, None, closed="left"), None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "device": [str],
        "verbose": ["verbose"],
    }
    _parts: ClassVar[dict[str, str]] = {
        "pretrain": "fields of aelab.tasks.PretrainOptions",
        "model": "fields of the model's config",
    }
    _routed: ClassVar[dict[str, str]] = {
        "pretrain__epochs": "set epochs",
        **{f"pretrain__{k}": v for k, v in ROUTED.items()},
    }

    def __init__(
        self,
        model: str = "auto",
        *,
        epochs: int | None = None,
        random_state: int = 0,
        device: str = "auto",
        verbose: bool = False,
        **parts: Any,
    ) -> None:
        self.model = model
        self.epochs = epochs
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self._store_parts(parts)

    def __sklearn_tags__(self) -> Any:
        return image_tags(super().__sklearn_tags__())

    def _options(self) -> Any:
        """The :class:`~aelab.tasks.PretrainOptions` of this fit (checked)."""
        from aelab.tasks import PretrainOptions, with_overrides

        given: dict[str, Any] = {
            **self._part("pretrain"), "seed": self.random_state, "device": self.device,
            "progress": bool(self.verbose), "model": self.model,
            "model_overrides": model_overrides(self),
        }  # fmt: skip
        if self.epochs is not None:
            given["epochs"] = self.epochs
        return with_overrides(PretrainOptions(), given, where="pretrain__")

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> AutoencoderTransformer:
        """Pre-train the autoencoder on the images ``X`` (``aelab pretrain``'s task).

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width[, channels])
            uint8 images, or floats in [0, 1].
        y : None
            Ignored (pre-training never sees labels).

        Returns
        -------
        self
        """
        from aelab.tasks import run_pretrain
        from aelab.tasks.modeling import model_shape
        from aelab.training import load_model

        images = as_images(X)
        opts = self._options()
        with temporary_run() as tmp:
            result = run_pretrain(images, tmp, opts)
            model, _ = load_model(result.run_dir, device="cpu")
        self.model_ = model
        self.model_name_ = result.model
        self.image_shape_ = model_shape(model)
        self.history_ = [dict(row) for row in result.history]
        return self

    @property
    def _n_features_out(self) -> int:
        """Latent dimensions (for ``get_feature_names_out``)."""
        check_is_fitted(self, "model_")
        return int(self.model_.config.latent_dim)

    def transform(self, X: Any) -> np.ndarray:
        """Latent vectors of the images ``X`` (the encoder's output, as ``aelab embed`` writes).

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width[, channels])

        Returns
        -------
        Z : ndarray of shape (n_samples, latent_dim), float32
        """
        from aelab.training import encode

        check_is_fitted(self, "model_")
        images = at_shape(X, self.image_shape_)
        return encode(self.model_, images, batch_size=INFER_BATCH, device=self.device)

    def inverse_transform(self, Z: Any) -> np.ndarray:
        """Images decoded from latent vectors.

        Parameters
        ----------
        Z : array-like of shape (n_samples, latent_dim)

        Returns
        -------
        images : ndarray of shape (n_samples, H, W), or (n_samples, H, W, C) for colour
            Floats in [0, 1] at the model's size ``image_shape_``.
        """
        check_is_fitted(self, "model_")
        return as_channels_last(decode(self.model_, Z, self.device))

    def score_samples(self, X: Any) -> np.ndarray:
        """Reconstruction error of each image: mean squared error over its pixels.

        Higher means reconstructed worse (less like the training images), as
        ``aelab reconstruct`` reports it; pixels are in [0, 1] at the model's size.

        Parameters
        ----------
        X : array-like of shape (n_samples, height, width[, channels])

        Returns
        -------
        errors : ndarray of shape (n_samples,), float64
        """
        from aelab.training import map_batches

        check_is_fitted(self, "model_")
        images = at_shape(X, self.image_shape_)
        err = map_batches(
            self.model_, images, lambda m, x: (m.decode(m.encode(x)) - x).square().mean((1, 2, 3)),
            batch_size=INFER_BATCH, device=self.device,
        )  # fmt: skip
        return err.numpy().astype(np.float64)

    def score(self, X: Any, y: Any = None) -> float:
        """Minus the mean reconstruction error of ``X`` (higher is better, for model selection)."""
        return -float(np.mean(self.score_samples(X)))

    # ------------------------------------------------------------------ saving
    def save(self, directory: str | Path) -> Path:
        """Write the fitted transformer to ``directory``: a model checkpoint (safetensors) and JSON.

        Nothing is pickled; :meth:`load` rebuilds an equal transformer.
        """
        check_is_fitted(self, "model_")
        record = {
            "params": self.get_params(deep=False),
            "model_name_": self.model_name_,
            "image_shape_": list(self.image_shape_),
            "history_": self.history_,
        }
        return save_folder(directory, _KIND, self.model_, self.model_name_, record)

    @classmethod
    def load(cls, directory: str | Path) -> AutoencoderTransformer:
        """Rebuild a transformer written by :meth:`save`.

        Raises
        ------
        ValueError
            When ``directory`` holds no saved AutoencoderTransformer.
        """
        record, model = load_folder(directory, _KIND)
        est = cls(**record["params"])
        est.model_ = model
        est.model_name_ = str(record["model_name_"])
        est.image_shape_ = tuple(int(v) for v in record["image_shape_"])
        est.history_ = list(record["history_"])
        return est
