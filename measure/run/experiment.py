"""``measure.Experiment``: a measurement started from Python with the settings the CLI uses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from measure.records.reader import Run, open_run
from measure.run.runner import run_measurement
from measure.settings import RunSettings


@dataclass
class Experiment:
    """The settings of one measurement (a :class:`measure.settings.RunSettings`, as the CLI and TOML
    build it); :meth:`run` measures them into ``settings.out`` and opens the run folder."""

    settings: RunSettings

    def run(self, show_progress: bool = True, force: bool = False) -> Run:
        """Measure (checks first, as ``measure run`` does) and return the run folder opened;
        ``force`` lets it write into a non-empty folder that holds no run."""
        return open_run(Path(run_measurement(self.settings, show_progress=show_progress, force=force)))
