"""report.html in a real headless Chromium: loads offline without console errors, shows its tables
and figures, and leaves a screenshot to look at.

Needs the Debian package ``chromium`` (``apt-get install -y chromium``); without it the test fails
with that instruction unless ``MEASURE_SKIP_BROWSER=1``. The screenshot goes to
``$MEASURE_TEST_ARTIFACTS`` (default ``reports/test-artifacts/``) and its path is printed.

Console messages: with ``--enable-logging=stderr --v=0`` Chromium writes every console message
and uncaught exception to stderr as ``...:CONSOLE:<line>] "<message>", source: <url>``. The page
has no scripts, so any such line is an error; a control page with a deliberate exception checks
that this detection works with the installed Chromium. Name resolution is disabled
(``--host-resolver-rules``), so the page is rendered offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from measure import testing
from measure.analysis.calibration import EVENTS
from measure.testing import chromium_or_fail

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CONSOLE_LINE = re.compile(r"(?:CONSOLE[:(]|Uncaught)")


def run_chromium(binary: str, page: Path, profile: Path, *extra: str, timeout: int = 120) -> subprocess.CompletedProcess:
    args = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-default-apps", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", *extra, page.resolve().as_uri(),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


@pytest.fixture(scope="module")
def chromium():
    return chromium_or_fail()


def test_missing_chromium_fails_with_instructions(monkeypatch):
    monkeypatch.delenv("MEASURE_SKIP_BROWSER", raising=False)
    monkeypatch.setattr(testing, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        chromium_or_fail()


def test_console_detection_works(chromium, tmp_path):
    control = tmp_path / "control.html"
    control.write_text("<!DOCTYPE html><html><body><p>control</p>"
                       "<script>console.error('boom'); notAFunction();</script></body></html>")
    result = run_chromium(chromium, control, tmp_path / "profile", "--dump-dom")
    lines = console_lines(result.stderr)
    assert any("boom" in line for line in lines), result.stderr[-2000:]
    assert any("Uncaught" in line for line in lines), result.stderr[-2000:]


def test_report_renders_without_errors(chromium, report_dir, tmp_path):
    page = report_dir / "report.html"
    result = run_chromium(chromium, page, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not console_lines(result.stderr), "\n".join(console_lines(result.stderr))
    dom = result.stdout
    assert "<title>measure report: report-test</title>" in dom
    # tables with rows
    for table in ("summary-divergence", "summary-latency", "paired-table", "provenance-table", "checks-table"):
        match = re.search(rf'<table[^>]*id="{table}"[^>]*>(.*?)</table>', dom, re.DOTALL)
        assert match, f"table {table} missing from the rendered DOM"
        assert match.group(1).count("<tr") >= 2, f"table {table} has no data rows"
    # figures as inline SVG with drawn content
    for figure in ("fig-findings", "fig-curves", "fig-attention"):
        match = re.search(rf'<div[^>]*id="{figure}"[^>]*>\s*<svg(.*?)</svg>', dom, re.DOTALL)
        assert match, f"figure {figure} has no inline <svg> in the rendered DOM"
        assert match.group(1).count("<path") >= 5, f"figure {figure} looks empty"
    # 3 problems cannot calibrate latencies: the page says so instead of drawing survival curves
    assert 'data-code="latencies_uncalibrated"' in dom and 'id="fig-survival"' not in dom
    assert dom.count('class="strip"') >= 5, "token strips missing"
    assert re.search(r'class="tok (?:injected|original|mixed|neither)"', dom), "no attributed tokens in the strips"
    # nothing fetched from outside: every src/href is a fragment or a data: URI
    for url in re.findall(r'\s(?:src|href)="([^"]*)"', dom):
        assert url.startswith(("#", "data:")), f"external reference {url!r}"


def test_report_screenshot(chromium, report_dir, tmp_path):
    artifacts = Path(os.environ.get("MEASURE_TEST_ARTIFACTS", ROOT / "reports" / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report-screenshot.png"
    shot.unlink(missing_ok=True)
    result = run_chromium(chromium, report_dir / "report.html", tmp_path / "profile",
                          f"--screenshot={shot}", "--window-size=1400,3200", "--hide-scrollbars")
    assert result.returncode == 0 and shot.exists(), result.stderr[-3000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a blank page compresses to a few KB
    shutil.copy(report_dir / "report.html", artifacts / "report.html")
    print(f"screenshot: {shot}")


FOLD_PROBE = """<script>
const topOf = id => document.getElementById(id).getBoundingClientRect().top;
const first = document.querySelector('#findings ul.findings li');
document.body.dataset.probe = JSON.stringify({findings: topOf('findings'), sentence: first.getBoundingClientRect().top,
  bottom: first.getBoundingClientRect().bottom, provenance: topOf('provenance'), height: window.innerHeight});
</script>"""


@pytest.fixture(scope="module")
def calibrated_report_dir(tmp_path_factory, helpers):
    """A report over synthetic records with enough problems to calibrate (see report_synthetic)."""
    from report_synthetic import synthetic_records

    from measure.report.summary import write_reports

    out = tmp_path_factory.mktemp("calibrated")
    write_reports(out, synthetic_records(), helpers.PROVENANCE, [], n_resamples=helpers.RESAMPLES)
    return out


def test_findings_come_first_above_the_fold(chromium, calibrated_report_dir, tmp_path):
    page = tmp_path / "probe.html"
    html = (calibrated_report_dir / "report.html").read_text(encoding="utf-8")
    page.write_text(html.replace("</body>", FOLD_PROBE + "</body>"), encoding="utf-8")
    result = run_chromium(chromium, page, tmp_path / "profile", "--window-size=1280,800", "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not console_lines(result.stderr), "\n".join(console_lines(result.stderr))
    match = re.search(r'data-probe="([^"]*)"', result.stdout)
    assert match, "the probe script did not run"
    probe = json.loads(match.group(1).replace("&quot;", '"'))
    assert 600 <= probe["height"] <= 800  # the window less the headless frame
    assert 0 <= probe["findings"] < probe["sentence"] < probe["bottom"] <= probe["height"], probe
    assert probe["provenance"] > probe["findings"] + probe["height"], probe  # provenance is far below
    dom = result.stdout
    assert re.search(r'<div[^>]*id="fig-survival"[^>]*>\s*<svg', dom), "calibrated latencies draw survival curves"
    assert "median 6 tokens" in dom  # the lead event's Kaplan-Meier median of the planted switch
    match = re.search(r'<table[^>]*id="calibration-table"[^>]*>(.*?)</table>', dom, re.DOTALL)
    assert match and match.group(1).count("<tr") == 1 + len(EVENTS), "one row per calibrated event at the one point"
    match = re.search(r'<table[^>]*id="lead-table"[^>]*>(.*?)</table>', dom, re.DOTALL)
    assert match and match.group(1).count("<tr") == 1 + 5, "one row per condition of the lead event at the one point"


def test_strategies_section_renders(chromium, tmp_path, helpers):
    """Strategy runs: one sub-section per strategy with its inline figure, between the attention and
    the token strips, and no console errors."""
    from report_synthetic import strategy_records

    from measure.report.summary import write_reports

    write_reports(tmp_path, strategy_records(n_problems=4), helpers.PROVENANCE, [], n_resamples=helpers.RESAMPLES)
    result = run_chromium(chromium, tmp_path / "report.html", tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-3000:]
    assert not console_lines(result.stderr), "\n".join(console_lines(result.stderr))
    dom = result.stdout
    for condition in ("multi", "multi_retract", "gradual"):
        match = re.search(rf'<div[^>]*id="fig-strategy-{condition}"[^>]*>\s*<svg(.*?)</svg>', dom, re.DOTALL)
        assert match and match.group(1).count("<path") >= 5, f"strategy figure {condition} missing or empty"
    assert dom.index('id="attention"') < dom.index('id="strategies"') < dom.index('id="strips"')
