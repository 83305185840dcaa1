"""Run named steps once; on ``--resume`` reuse the ones that finished.

Each finished step leaves ``steps/<name>.json`` in the run folder holding its
result record (:class:`~aelab.tasks.Record` as JSON) and wall time. The file is
written last and atomically, so a step that failed half-way is simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from aelab.files import read_json, write_json
from aelab.study.results import StepTime
from aelab.tasks import Record

R = TypeVar("R", bound=Record)


class StepRunner:
    """Run study steps in order, recording typed results and wall times.

    Parameters
    ----------
    run_dir : path
        The run folder; step records go to ``run_dir/steps``.
    resume : bool
        Reuse the record of a step that already finished instead of running it.
    log : callable, optional
        Receives one line of text per step (started, reused, finished).
    """

    def __init__(
        self, run_dir: str | Path, *, resume: bool, log: Callable[[str], None] = print
    ) -> None:
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.log = log
        self.times: list[StepTime] = []

    def _record(self, name: str) -> Path:
        return self.run_dir / "steps" / f"{name}.json"

    def run(self, name: str, kind: type[R], fn: Callable[[], R]) -> R:
        """Run ``fn`` as step ``name`` (or reuse its record, read back as ``kind``)."""
        rec = self._record(name)
        if self.resume and rec.exists():
            data = read_json(rec)
            try:
                result = kind.from_json(data["result"])
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(
                    f"{rec}: not a record of this aelab's {name} step ({e}); "
                    "run the study again without --resume into a new folder"
                ) from None
            self.times.append(StepTime(name, float(data["wall_s"]), True))
            self.log(f"[{name}] reused from an earlier run ({data['wall_s']:.1f} s then)")
            return result
        self.log(f"[{name}] running")
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        write_json(rec, {"step": name, "wall_s": wall, "result": result.to_json()})
        self.times.append(StepTime(name, wall, False))
        self.log(f"[{name}] done in {wall:.1f} s")
        return result
