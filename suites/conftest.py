"""Measurement suites: the experiments (conditions x injection points x problems, see README.md
and docs/METHOD.md) as parametrized pytest tests.

The measure plugin (registered through ``pytest11``) provides the options (``--measure-*``), the
``measure_case`` parametrization, the ``measure_suite`` and ``measurement`` fixtures and the report
written at session end. This file only marks the cases that run on the embedded SmolLM2 model
``model``, so ``-m "not model"`` deselects them where that model is not installed.
"""

from __future__ import annotations

import pytest

EMBEDDED_PREFIX = "embedded:"


def pytest_collection_modifyitems(config, items):
    model = config.getoption("--measure-model") or EMBEDDED_PREFIX
    if not model.startswith(EMBEDDED_PREFIX):
        return
    for item in items:
        if "measure_case" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)
