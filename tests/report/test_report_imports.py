"""Import boundaries of the report: ``measure compare`` stays free of matplotlib.

Each check runs in a fresh interpreter, so that what other tests imported does not count.
"""

from __future__ import annotations

import json
import subprocess
import sys


def _fresh(code: str, *args: str) -> list:
    """Run ``code`` in a new interpreter; it prints one JSON value as its last line."""
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


MATPLOTLIB = "sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib')"


def test_importing_compare_does_not_import_matplotlib():
    code = f"import json, sys\nimport measure.report.compare, measure.report.cli\nprint(json.dumps({MATPLOTLIB}))\n"
    assert _fresh(code) == []


def test_running_compare_does_not_import_matplotlib(report_dir, tmp_path, helpers):
    """NEW has only samples.jsonl, so its summary is rebuilt in memory too."""
    base = helpers.copy_run(report_dir, tmp_path / "base")
    new = helpers.copy_run(report_dir, tmp_path / "new")
    (new / "metrics.json").unlink()
    code = ("import json, sys\n"
            "from measure.report import cli\n"
            "status = cli.main(['compare', sys.argv[1], sys.argv[2]])\n"
            f"print(json.dumps([status, {MATPLOTLIB}]))\n")
    assert _fresh(code, str(base), str(new)) == [0, []]
