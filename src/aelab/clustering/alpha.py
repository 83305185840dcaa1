"""Equilibrium K-Means' alpha as users write it, and the automatic alpha.

Alpha is an inverse temperature on squared distances, so its useful range
depends on the scale of the data. The author's default, ``"auto"``, is
``2 / mean squared distance to the mean``; users and commands also give
absolute values (``0.05``) or multiples of the automatic one (``"3x"``,
``"0.1x"``). This module is the one place that computes the automatic alpha
(:func:`auto_alpha`, the same number ``EquilibriumKMeans(alpha="auto")``
uses) and the one parser of the text forms (:func:`parse_alpha`).

It needs numpy only: importing it does not load scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np

from aelab.clustering._ekm_data import _DataStats

__all__ = [
    "Alpha",
    "AlphaMultiple",
    "as_feature_matrix",
    "auto_alpha",
    "parse_alpha",
    "resolve_alpha",
]


@dataclass(frozen=True)
class AlphaMultiple:
    """An alpha given as a multiple of the automatic alpha, e.g. ``"3x"``.

    It is resolved against the data being clustered (:func:`resolve_alpha`),
    so the same multiple follows a feature space whose scale changes (deep
    clustering re-resolves it every round).

    Attributes
    ----------
    factor : float
        Positive and finite; ``alpha = factor * auto_alpha(X)``.
    """

    factor: float

    def __str__(self) -> str:
        return f"{self.factor:g}x"


#: What :func:`parse_alpha` returns: an absolute alpha, ``"auto"``, or a multiple of auto.
Alpha = float | Literal["auto"] | AlphaMultiple

_ALPHA_FORMS = (
    "give 'auto', a positive number such as 0.05, or a positive multiple of the automatic "
    "alpha such as '3x' or '0.1x'"
)


def _alpha_from_spread(mean_sq_dev: float) -> float:
    """The author's default from the mean squared distance to the mean (1 if all points coincide)."""
    return 2.0 / mean_sq_dev if mean_sq_dev > 0 else 1.0


def as_feature_matrix(X: Any) -> np.ndarray:
    """X as a C-contiguous float32 (kept) or float64 matrix, as the estimators convert it.

    Raises
    ------
    ValueError
        For non-numbers, a shape that is not 2-D, or an empty matrix, saying what to do.
    """
    X = np.asarray(X)
    if X.dtype.kind not in "fiub":
        raise ValueError(f"X has dtype {X.dtype}; expected numbers (float or int)")
    if X.ndim != 2:
        raise ValueError(
            f"X has shape {X.shape}; expected 2 dimensions (n_samples, n_features): reshape it, "
            f"e.g. X.reshape(len(X), -1)"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X has shape {X.shape}; give at least one sample and one feature")
    return np.ascontiguousarray(X, dtype=np.float32 if X.dtype == np.float32 else np.float64)


def _as_weights(sample_weight: Any, n_samples: int) -> np.ndarray:
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.shape != (n_samples,):
        raise ValueError(f"sample_weight has shape {sw.shape}; expected ({n_samples},)")
    if not np.isfinite(sw).all() or (sw < 0).any() or not sw.sum() > 0:
        raise ValueError("sample_weight must be finite and non-negative, with a positive sum")
    return sw


def auto_alpha(X: Any, sample_weight: Any = None) -> float:
    """The automatic alpha of Equilibrium K-Means: ``2 / mean_n ||x_n - mean(X)||^2``.

    The author's default ("dvariance"), and exactly the ``alpha_`` that
    ``EquilibriumKMeans(alpha="auto")`` and ``MiniBatchEquilibriumKMeans``
    compute in ``fit`` on the same X. It is 1 when all points coincide.
    Computed in row chunks with float64 sums (no copy of X), relative to the
    mean when the data sit far from the origin.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Finite numbers; float32 is kept, anything else is read as float64.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights: the weighted mean squared distance to the
        weighted mean.

    Returns
    -------
    alpha : float
        Positive.

    Examples
    --------
    >>> auto_alpha([[0.0, 0.0], [2.0, 0.0]])  # mean squared distance to the mean: 1
    2.0
    """
    X = as_feature_matrix(X)
    sw = None if sample_weight is None else _as_weights(sample_weight, X.shape[0])
    return _alpha_from_spread(_DataStats(X, sw).mean_sq_dev)


def parse_alpha(value: Any) -> Alpha:
    """Read an alpha as a user writes it (a command-line option, a config value).

    Parameters
    ----------
    value : str, float or AlphaMultiple
        ``"auto"`` (any case), a positive finite number (or its text, e.g.
        ``"0.05"``, ``"1e-3"``), or a positive multiple of the automatic
        alpha written with a trailing ``x`` (``"3x"``, ``"0.1X"``). A parsed
        value is returned as it is, so parsing twice is harmless.

    Returns
    -------
    float, "auto" or AlphaMultiple
        A float for an absolute alpha, the string ``"auto"`` (which the
        estimators accept as their ``alpha``), or an :class:`AlphaMultiple`
        to resolve against the data with :func:`resolve_alpha`.

    Raises
    ------
    ValueError
        For anything else (zero, negative, NaN, inf, ``"x"``, ``"3y"``, a bool),
        with a one-line message listing the accepted forms.

    Examples
    --------
    >>> parse_alpha("auto"), parse_alpha("0.5"), parse_alpha(" 3X ")
    ('auto', 0.5, AlphaMultiple(factor=3.0))
    """
    if isinstance(value, AlphaMultiple):
        return value
    multiple = False
    v = float("nan")
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        multiple = text.endswith("x")
        try:
            v = float(text[:-1] if multiple else text)
        except ValueError:
            pass
    elif isinstance(value, Real) and not isinstance(value, (bool, np.bool_)):
        v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"alpha {value!r} is not valid; {_ALPHA_FORMS}")
    return AlphaMultiple(v) if multiple else v


def resolve_alpha(alpha: Any, X: Any, sample_weight: Any = None) -> float:
    """The absolute alpha that ``alpha`` means on X.

    Parameters
    ----------
    alpha : str, float or AlphaMultiple
        Anything :func:`parse_alpha` accepts.
    X : array-like of shape (n_samples, n_features)
        The data to be clustered (in the space they are clustered in). Not
        read for an absolute alpha.
    sample_weight : array-like of shape (n_samples,), default=None
        As in :func:`auto_alpha`.

    Returns
    -------
    alpha : float
        The number itself, ``auto_alpha(X)``, or ``factor * auto_alpha(X)``.
    """
    a = parse_alpha(alpha)
    if isinstance(a, float):
        return a
    base = auto_alpha(X, sample_weight)
    return base if isinstance(a, str) else a.factor * base
