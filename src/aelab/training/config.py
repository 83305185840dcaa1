"""Deprecated name of :mod:`aelab.training.loop_config` (it read too much like ``configs``).

Kept so that imports of ``aelab.training.config`` keep working.
"""

from aelab.training.loop_config import TrainConfig, TrainResult

__all__ = ["TrainConfig", "TrainResult"]
