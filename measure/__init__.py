"""Adaptation-latency measurement suite.

Measures, token by token, how a causal language model's next-token distributions follow a
context change injected in the middle of its generation, by editing the live KV cache.

From Python (docs/python-api.md)::

    import measure
    run = measure.open_run("reports/baselines/smollm2")
    run.curves_frame("kl:oracle", conditions=["injection", "flush"])
    run = measure.run(measure.RunSettings(limit=3, out="reports/mine"))

``import measure`` stays cheap: the names below are imported when first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

__all__ = ["Record", "Run", "RunSettings", "__version__", "open_run", "run"]

#: Public name -> the module that defines it (``run`` is the subpackage measure.run, callable).
_WHERE = {"open_run": "measure.records.reader", "Run": "measure.records.reader", "Record": "measure.records.record",
          "RunSettings": "measure.settings"}


def __getattr__(name: str):
    if name == "run":
        return importlib.import_module("measure.run")
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'measure' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
