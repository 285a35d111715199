"""Run folders: ``job.json`` and one atomically written file per finished unit, so an
interrupted run resumes (:class:`RunFolder`, :class:`UnitRunner`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tl_unlearn.execution.executors import InProcessExecutor, RayExecutor

__all__ = ["RunFolder", "UnitRunner"]


class RunFolder:
    """A run's folder: ``job.json`` and one JSON file per finished unit (each written
    atomically), so an interrupted run can resume.

    Args:
        path: The folder.
        job: The job (JSON), which a resumed run must match.
        resume: Keep the finished units (the folder must hold the same job).
        overwrite: Without ``resume``, start over in a folder holding another job (else
            refuse it).

    Raises:
        ValueError: ``resume`` and no job there, or another job there (before any work).
    """

    def __init__(
        self, path: str | Path, job: dict[str, Any], resume: bool, overwrite: bool = False
    ) -> None:
        from tl_unlearn.core.files import atomic_write_text

        self.path = Path(path)
        self.units = self.path / "units"
        spec = self.path / "job.json"
        same = spec.exists() and json.loads(spec.read_text()) == json.loads(json.dumps(job))
        if resume and not spec.exists():
            raise ValueError(f"Nothing to resume in {self.path}: it has no job.json.")
        if spec.exists() and not same and (resume or not overwrite):
            raise ValueError(f"{self.path} holds another job ({spec}); use a new folder.")
        self.path.mkdir(parents=True, exist_ok=True)
        self.units.mkdir(exist_ok=True)
        if not resume:
            for old in self.units.glob("*.json"):
                old.unlink()
        atomic_write_text(spec, json.dumps(job, indent=1))

    @staticmethod
    def stored_job(path: str | Path) -> dict[str, Any] | None:
        """The job of the run folder at ``path`` (None when it holds none)."""
        try:
            job = json.loads((Path(path) / "job.json").read_text())
        except (OSError, ValueError):
            return None
        return job if isinstance(job, dict) else None

    def read(self, unit: Any) -> dict[str, Any] | None:
        """A finished unit's result (None when not finished, or finished for another spec)."""
        path = self.units / f"{unit.key}.json"
        if not path.exists():
            return None
        stored = json.loads(path.read_text())
        return stored["result"] if stored.get("unit") == unit.to_dict() else None

    def remove(self) -> None:
        """Remove the units and the job (the run is finished and written)."""
        import shutil

        shutil.rmtree(self.units, ignore_errors=True)
        (self.path / "job.json").unlink(missing_ok=True)

    def write(self, unit: Any, result: dict[str, Any]) -> None:
        from tl_unlearn.core.files import atomic_write_text

        atomic_write_text(
            self.units / f"{unit.key}.json", json.dumps({"unit": unit.to_dict(), "result": result})
        )


class UnitRunner:
    """Submits units to an executor and collects their results (as dicts, by unit), reading
    finished ones back from a :class:`RunFolder` when resuming and writing new ones there.

    ``on_unit(n, executor)`` is called after each unit computed now, ``n`` counting them.
    """

    def __init__(
        self,
        executor: InProcessExecutor | RayExecutor,
        folder: RunFolder | None = None,
        resume: bool = False,
        on_unit: Callable[[int, Any], None] | None = None,
    ) -> None:
        self.executor = executor
        self.folder = folder
        self.resume = resume
        self.on_unit = on_unit
        self.results: dict[Any, dict[str, Any]] = {}
        self.computed = 0
        self.read_back = 0

    def restore(self, units: Sequence[Any]) -> list[Any]:
        """Read the finished ``units`` back (when resuming); the units still to compute."""
        todo = []
        for u in units:
            stored = self.folder.read(u) if self.resume and self.folder is not None else None
            if stored is None:
                todo.append(u)
            else:
                self.results[u] = stored
                self.read_back += 1
        return todo

    def submit(self, units: Sequence[Any]) -> None:
        """Submit the units not read back to the executor."""
        self.executor.submit(self.restore(units))

    def _done(self, unit: Any, result: dict[str, Any]) -> None:
        self.results[unit] = result
        if self.folder is not None:
            self.folder.write(unit, result)
        self.computed += 1
        if self.on_unit is not None:
            self.on_unit(self.computed, self.executor)

    def collect(self, progress: bool = False, desc: str = "units") -> dict[Any, dict[str, Any]]:
        """Wait for every submitted unit; all results so far."""
        self.executor.collect(self._done, progress, desc)
        return self.results

    @property
    def info(self) -> dict[str, int]:
        return {
            "units": len(self.results),
            "computed": self.computed,
            "read_back": self.read_back,
            "retried": self.executor.retries,
        }
