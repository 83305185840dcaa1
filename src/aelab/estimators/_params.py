"""Settings of an estimator's parts, reached by a prefix (``pretrain__epochs=1``).

skorch routes the settings of a network's parts by prefix (``module__``,
``optimizer__``) so that ``get_params``/``set_params``, ``clone`` and
``GridSearchCV`` reach every one of them without a constructor parameter per
knob. This is aelab's own small version of the idea: a keyword argument
``<part>__<field>`` is stored as an attribute of that name, listed by
``get_params`` and changed by ``set_params``; ``fit`` turns the settings of a
part into that part's config dataclass (:func:`aelab.tasks.with_overrides`),
whose fields and checks are the one place each setting is declared, shared
with the command line's ``--set``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sklearn.base import BaseEstimator

SEP = "__"


class PartParams(BaseEstimator):
    """A scikit-learn estimator whose parts take settings by prefix.

    Subclasses name their parts in ``_parts`` (prefix -> what the part's
    settings are, for messages) and the fields that a constructor parameter
    sets instead in ``_routed`` (``"pretrain__seed"`` -> what to do instead).
    """

    #: Prefix -> what the settings of that part are (said in error messages).
    _parts: ClassVar[dict[str, str]] = {}
    #: Part settings given another way (key -> what to do instead, e.g. "set random_state").
    _routed: ClassVar[dict[str, str]] = {}

    def _store_parts(self, settings: dict[str, Any]) -> None:
        """Keep ``settings`` as attributes, as ``__init__`` keeps its arguments (checked in ``fit``)."""
        for key, value in settings.items():
            setattr(self, key, value)

    def _part_keys(self) -> list[str]:
        """The keyword settings this estimator holds (prefixed or not), sorted.

        Every attribute that is no constructor parameter, not private (``_x``)
        and not learned (``x_``) came in as a keyword setting.
        """
        named = set(super()._get_param_names())
        return sorted(
            k for k in vars(self)
            if k not in named and not k.startswith("_") and not k.endswith("_")
        )  # fmt: skip

    def _prefix(self, key: str) -> str | None:
        head, sep, field = key.partition(SEP)
        return head if sep and field and head in self._parts else None

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this estimator, prefixed part settings included.

        Parameters
        ----------
        deep : bool
            Also return the parameters of contained estimators (``init__...``).

        Returns
        -------
        dict of str to object
        """
        params = super().get_params(deep=deep)
        params.update((k, getattr(self, k)) for k in self._part_keys())
        return params

    def set_params(self, **params: Any) -> PartParams:
        """Set parameters, prefixed part settings (``finetune__lr=0.01``) included.

        A part setting is checked against the part's config when ``fit`` runs
        (so that an invalid value is refused once, by the config's own checks);
        an unknown prefix is refused here.

        Returns
        -------
        self
        """
        own = {k: v for k, v in params.items() if self._prefix(k) is not None}
        rest = {k: v for k, v in params.items() if k not in own}
        if rest:
            super().set_params(**rest)
        self._store_parts(own)
        return self

    def _part(self, prefix: str) -> dict[str, Any]:
        """The settings given for part ``prefix``, without it (``{"epochs": 1}``).

        Raises
        ------
        ValueError
            For a setting that a constructor parameter sets instead (naming it).
        """
        self._check_parts()
        out = {}
        for key in self._part_keys():
            if self._prefix(key) != prefix:
                continue
            if key in self._routed:
                raise ValueError(
                    f"{type(self).__name__}: {key} is not a setting here; {self._routed[key]}"
                )
            out[key[len(prefix) + len(SEP) :]] = getattr(self, key)
        return out

    def _check_parts(self) -> None:
        """Refuse keyword settings that name no part (at ``fit``: ``__init__`` only stores)."""
        bad = [k for k in self._part_keys() if self._prefix(k) is None]
        if bad:
            parts = ", ".join(f"{p}__<setting> ({what})" for p, what in self._parts.items())
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword arguments {', '.join(bad)}; "
                f"settings of its parts are given as {parts}"
            )
