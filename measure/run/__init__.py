"""Running a measurement: the runner behind ``measure run``, the checks made before any model
work (preflight), the provenance every result carries, and the executors (local, Ray).

- :mod:`measure.run.runner`: ``run_measurement``, from settings to a run folder with a report;
- :mod:`measure.run.preflight`: context-length and settings checks before loading anything big;
- :mod:`measure.run.provenance`: versions, git hash, seed, model and device;
- :mod:`measure.run.executors`: where problem groups are measured (this process or Ray actors).

- :mod:`measure.run.experiment`: ``measure.Experiment(settings).run()``, the same from Python.
"""
