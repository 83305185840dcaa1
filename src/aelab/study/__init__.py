"""The study of docs/study.md from one config: plan (split once, check everything), run the tasks, record.

- :mod:`aelab.study.config` — :class:`StudyConfig`, read from TOML
- :mod:`aelab.study.plan` — :func:`make_plan`: the data split once, settings derived and checked
- :mod:`aelab.study.run` — :func:`run_study`: the steps, as tasks, resumable
- :mod:`aelab.study.results` — :class:`StudyResults`, what the report renders
"""

from aelab.study.config import StudyConfig, default_toml, dump_config, load_config
from aelab.study.plan import StudyPlan, make_plan
from aelab.study.results import StudyResults
from aelab.study.run import run_study

__all__ = [
    "StudyConfig",
    "StudyPlan",
    "StudyResults",
    "default_toml",
    "dump_config",
    "load_config",
    "make_plan",
    "run_study",
]
