"""Run named steps once; on ``--resume`` reuse the ones that finished.

Each finished step leaves ``steps/<name>.json`` in the run folder holding its
JSON result and wall time. The file is written last and atomically, so a step
that failed half-way is simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aelab.files import read_json, write_json


class StepRunner:
    """Run study steps in order, recording results and wall times.

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
        self.results: dict[str, Any] = {}
        self.wall: dict[str, float] = {}
        self.reused: list[str] = []

    def _record(self, name: str) -> Path:
        return self.run_dir / "steps" / f"{name}.json"

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` as step ``name`` (or reuse its record) and return its result."""
        rec = self._record(name)
        if self.resume and rec.exists():
            data = read_json(rec)
            self.results[name], self.wall[name] = data["result"], float(data["wall_s"])
            self.reused.append(name)
            self.log(f"[{name}] reused from an earlier run ({self.wall[name]:.1f} s then)")
            return self.results[name]
        self.log(f"[{name}] running")
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        write_json(rec, {"step": name, "wall_s": wall, "result": result})
        self.results[name], self.wall[name] = result, wall
        self.log(f"[{name}] done in {wall:.1f} s")
        return result
