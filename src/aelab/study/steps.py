"""Run named steps once; on ``--resume`` reuse the ones that finished from what they would run on now.

Each finished step leaves ``steps/<name>.json`` in the run folder holding its
result record (:class:`~aelab.tasks.Record` as JSON), its wall time and its
:class:`~aelab.fingerprint.Fingerprint`: the settings, data, earlier steps and
code it ran from. A resumed study reuses a step only when that fingerprint is
the one the step would have now; otherwise it says in one line what changed
and runs it again. A step's fingerprint holds those of the steps it reads, so
a change runs the step and every step after it that depends on it, as a build
tool would. The file is written last and atomically, so a step that failed
half-way is simply run again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from aelab.files import read_json, write_json
from aelab.fingerprint import Fingerprint
from aelab.study.results import StepTime
from aelab.tasks import Record

R = TypeVar("R", bound=Record)


class StepRunner:
    """Run study steps in order, recording typed results, fingerprints and wall times.

    Parameters
    ----------
    run_dir : path
        The run folder; step records go to ``run_dir/steps``.
    resume : bool
        Reuse the record of a step that already finished from the same fingerprint.
    log : callable, optional
        Receives one line of text per step (started, reused, changed, finished).

    Attributes
    ----------
    digests : dict of str to str
        The fingerprint digest of every step run or reused so far, by name:
        what the steps that read its result put in their own fingerprints.
    """

    def __init__(
        self, run_dir: str | Path, *, resume: bool, log: Callable[[str], None] = print
    ) -> None:
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.log = log
        self.times: list[StepTime] = []
        self.digests: dict[str, str] = {}

    def _record(self, name: str) -> Path:
        return self.run_dir / "steps" / f"{name}.json"

    def _reuse(self, name: str, kind: type[R], fingerprint: Fingerprint) -> R | None:
        """The recorded result of step ``name`` when it was made from ``fingerprint``, else ``None``."""
        rec = self._record(name)
        if not (self.resume and rec.exists()):
            return None
        data = read_json(rec)
        change = fingerprint.change_from(Fingerprint.from_json(data.get("fingerprint")))
        if change is not None:
            self.log(f"[{name}] {change}: running again")
            return None
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

    def run(self, name: str, kind: type[R], fn: Callable[[], R], fingerprint: Fingerprint) -> R:
        """Run ``fn`` as step ``name`` (or reuse its record, read back as ``kind``).

        Parameters
        ----------
        fingerprint : Fingerprint
            What the step runs from now; the record is reused only when it recorded the same.
        """
        self.digests[name] = fingerprint.digest
        reused = self._reuse(name, kind, fingerprint)
        if reused is not None:
            return reused
        if not (self.resume and self._record(name).exists()):
            self.log(f"[{name}] running")
        t0 = time.perf_counter()
        result = fn()
        wall = time.perf_counter() - t0
        write_json(
            self._record(name),
            {"step": name, "wall_s": wall, "result": result.to_json(),
             "fingerprint": fingerprint.to_json()},
        )  # fmt: skip
        self.times.append(StepTime(name, wall, False))
        self.log(f"[{name}] done in {wall:.1f} s")
        return result
