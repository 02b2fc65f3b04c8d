"""Adaptation-latency measurement suite.

Measures, token by token, how a causal language model's next-token distributions follow a
context change injected in the middle of its generation, by editing the live KV cache.

From Python (docs/python-api.md)::

    import measure
    run = measure.open_run("reports/baselines/smollm2")
    run.curves_frame("kl:oracle", conditions=["injection", "flush"])
    run = measure.Experiment(measure.RunSettings(limit=3, out="reports/mine")).run()

``import measure`` stays cheap: the names below are imported when first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["Experiment", "Record", "Run", "RunSettings", "__version__", "open_run"]

#: Public name -> the module that defines it.
_WHERE = {"open_run": "measure.records.reader", "Run": "measure.records.reader", "Record": "measure.records.record",
          "RunSettings": "measure.settings", "Experiment": "measure.run.experiment"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'measure' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
