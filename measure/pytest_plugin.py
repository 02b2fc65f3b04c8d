"""pytest plugin: measurement options, the `measurement` fixture and the session report.

Registered through the ``pytest11`` entry point in pyproject.toml.
"""

from __future__ import annotations


def pytest_addoption(parser) -> None:
    group = parser.getgroup("measure", "adaptation-latency measurements")
    group.addoption("--measure-model", default=None, help="model for suites/ (default: the embedded SmolLM2)")
