"""Hooks for every test run of this repository (tests/ and suites/): no silent skips.

- Under ``CI=true``, where the datasets are present ($MEASURE_DATA_DIR, else ../shared/data beside
  the repository), a test that skips because a dependency is missing (the datasets, Ray, the Gemma
  3 packages, the embedded model) fails instead: such a CI job is meant to run everything, and a
  skip there means the environment lost something, not that the test does not apply.
- Every run ends with one line counting the skips, with their reasons.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
#: Skip reasons that name a missing dependency (tests/data: "real datasets not found at ...",
#: tests/run/test_executors.py: Ray, tests/model/test_gemma_loader.py: "the Gemma 3 packages are not
#: installed", suites/test_attention_smollm2.py: "embedded model unavailable").
MISSING_DEPENDENCY = re.compile(r"datasets? not found|MEASURE_DATA_DIR|\bray\b|gemma|not installed|"
                                r"could not import|model unavailable", re.IGNORECASE)
REASON_WIDTH = 90


def datasets_present() -> bool:
    configured = os.environ.get("MEASURE_DATA_DIR")
    return Path(configured).is_dir() if configured else (ROOT.parent / "shared" / "data").is_dir()


def strict_skips() -> bool:
    return os.environ.get("CI", "").lower() == "true" and datasets_present()


def skip_reason(report) -> str:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        return re.sub(r"^Skipped: ", "", str(report.longrepr[2]))
    return str(report.longrepr or "")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and strict_skips():
        reason = skip_reason(report)
        if MISSING_DEPENDENCY.search(reason):
            report.outcome = "failed"
            report.longrepr = (f"CI=true with the datasets present, but this test skipped for a missing dependency: "
                               f"{reason}. Install it (make setup) or unset CI to allow the skip.")


def skip_summary(reasons: list[str]) -> str:
    """``skips: 3 (2 real datasets not found ...; 1 ...)``: one line, the commonest reasons first."""
    counts = Counter(reason if len(reason) <= REASON_WIDTH else reason[:REASON_WIDTH - 3] + "..." for reason in reasons)
    listed = "; ".join(f"{n} {reason}" for reason, n in counts.most_common())
    return f"skips: {len(reasons)}" + (f" ({listed})" if listed else "")


def pytest_terminal_summary(terminalreporter):
    reasons = [skip_reason(report) for report in terminalreporter.stats.get("skipped", [])]
    terminalreporter.write_line(skip_summary(reasons))
