"""Import boundaries between layers (data -> engine -> scoring -> metrics -> records -> report).

Each check runs in a fresh interpreter, so that what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _loaded_after(imports: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules under ``prefixes`` that importing ``imports`` loads in a new interpreter."""
    code = (f"import json, sys\nimport {imports}\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_pytest_plugin_does_not_import_the_runner():
    plugin = ("measure.pytest_plugin, measure.pytest_plugin.suite, measure.pytest_plugin.cases, "
              "measure.pytest_plugin.merge, measure.pytest_plugin.worker_log")
    assert _loaded_after(plugin, ("measure.run.runner",)) == []


def test_the_records_layer_imports_nothing_above_it():
    above = ("measure.run.runner", "measure.report", "measure.pytest_plugin", "torch", "matplotlib")
    assert _loaded_after("measure.records, measure.records.samples, measure.records.store", above) == []
