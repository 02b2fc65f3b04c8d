"""Running a measurement: the runner behind ``measure run``, the checks made before any model
work (preflight), the provenance every result carries, and the executors (local, Ray).

- :mod:`measure.run.runner`: ``run_measurement``, from settings to a run folder with a report;
- :mod:`measure.run.preflight`: context-length and settings checks before loading anything big;
- :mod:`measure.run.provenance`: versions, git hash, seed, model and device;
- :mod:`measure.run.executors`: where problem groups are measured (this process or Ray actors).

``measure.run(settings)`` measures from Python: this package is callable (see :func:`run`),
because the public name ``measure.run`` and this subpackage are one attribute of ``measure``.
"""

from __future__ import annotations

import sys
import types


def run(settings, show_progress: bool = True, force: bool = False):
    """Measure ``settings`` (a :class:`measure.settings.RunSettings`, as the CLI and TOML build it)
    into ``settings.out`` and return the run folder opened (:class:`measure.records.reader.Run`)."""
    from measure.records.reader import open_run  # imported on call: `import measure.run` stays light
    from measure.run.runner import run_measurement

    return open_run(run_measurement(settings, show_progress=show_progress, force=force))


class _CallableModule(types.ModuleType):
    def __call__(self, settings, show_progress: bool = True, force: bool = False):
        return run(settings, show_progress=show_progress, force=force)


sys.modules[__name__].__class__ = _CallableModule
