"""report.html: self-contained, escaped, with tables, figures, strips and the attention heatmap."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from measure.metrics.attribution import LABELS
from measure.records.record import Record
from measure.report import html as report_html
from measure.report import plots
from measure.report.summary import build_metrics, write_reports


@pytest.fixture(scope="module")
def page(report_dir):
    return (report_dir / "report.html").read_text(encoding="utf-8")


def test_page_is_self_contained(page):
    assert "<script" not in page.lower()  # no scripts at all, so nothing to fail offline
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page, re.IGNORECASE)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page, re.IGNORECASE)
    assert "@import" not in page
    assert "NaN" not in page and "Infinity" not in page


def _table(page: str, table_id: str) -> list[list[str]]:
    """The rows of one table of the page as lists of cell texts (tags dropped, spaces collapsed)."""
    start = page.index(f'id="{table_id}"')
    body = page[start:page.index("</table>", start)]
    rows = re.findall(r"<tr.*?</tr>", body, re.DOTALL)
    return [[" ".join(re.sub(r"<[^>]+>", " ", cell).split())
             for cell in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)] for row in rows]


def _km_median(times: list[float], censored: list[bool]) -> float | None:
    """Kaplan-Meier median by its definition: the first event time at which the product of
    (1 - events / at risk) over event times so far reaches 0.5; None when it never does."""
    survival = 1.0
    for t in sorted({t for t, c in zip(times, censored) if not c}):
        at_risk = sum(u >= t for u in times)
        events = sum(u == t and not c for u, c in zip(times, censored))
        survival *= 1 - events / at_risk
        if survival <= 0.5:
            return t
    return None


def test_page_has_provenance_tables_and_figures(page, helpers):
    for text in ("tiny:llama", "report-test", "settings.max_new_tokens", "ignore run too short"):
        assert text in page
    for anchor in ('id="findings"', 'id="fig-findings"', 'id="calibration-table"', 'id="summary-divergence"',
                   'id="summary-latency"', 'id="paired-table"', 'id="fig-curves"', 'id="fig-attention"',
                   'id="checks-table"', 'id="provenance-table"'):
        assert anchor in page
    # 3 problems cannot calibrate the latencies: no survival curves, and the page says why
    assert 'id="fig-survival"' not in page and 'data-code="latencies_uncalibrated"' in page
    assert page.count("<svg") == 3  # findings, curves, attention
    # the findings come before the full tables and the provenance
    assert page.index('id="findings"') < page.index('id="summary"') < page.index('id="provenance"')


def test_latency_table_shows_the_censoring_of_the_records(page, session_records):
    """The stabilization-latency cell of each condition's pooled row shows the Kaplan-Meier median
    and the censored share that the records themselves give (computed here, not by measure)."""
    header, *rows = _table(page, "summary-latency")
    column = header.index("stabilization latency")
    checked = 0
    for row in rows:
        condition, variation, point = row[0], row[1], row[2]
        if variation != "all":
            continue
        runs = [r.metrics for r in session_records if r.condition == condition and r.point == point]
        times = [m["stabilization_latency"] for m in runs]
        censored = [bool(m["stabilization_latency_censored"]) for m in runs]
        assert int(row[3]) == len(runs), row
        assert f"{sum(censored) / len(runs):.0%} censored" in row[column], row
        median = _km_median(times, censored)
        shown = row[column].split()[0]
        assert (shown == "not" if median is None else float(shown) == median), (row, median)
        checked += 1
    assert checked == len({(r.condition, r.point) for r in session_records})
    assert "attention-missing" not in page


def test_attention_not_captured_is_said(fresh_records, helpers):
    for r in fresh_records:
        r.arrays.attention_layers_tokens = None
    metrics = build_metrics(fresh_records[:12], {}, [], n_resamples=helpers.RESAMPLES)
    page = report_html.render_html(fresh_records, metrics)
    assert 'id="attention-missing"' in page and "not captured" in page.lower()
    assert 'id="fig-attention"' not in page


def test_every_data_string_is_escaped(fresh_records, tmp_path, helpers):
    records = helpers.add_hostile(helpers.add_attention(fresh_records))
    provenance = {"model": helpers.XSS, helpers.XSS: "key", "nested": {"list": [helpers.XSS]}}
    write_reports(tmp_path, records, provenance, [{"point": helpers.XSS, "reason": helpers.XSS}],
                  n_resamples=helpers.RESAMPLES)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count("&lt;script&gt;") >= 10  # texts, pieces, provenance, skipped, variation type, outcome


def test_markup_in_condition_names_is_escaped_inside_svg(fresh_records, helpers):
    for r in fresh_records:
        if r.condition == "repeat":
            r.condition = helpers.XSS
            r.metrics["condition"] = helpers.XSS
    metrics = build_metrics(fresh_records, {}, [], n_resamples=helpers.RESAMPLES)
    page = report_html.render_html(fresh_records, metrics)
    assert "<script" not in page.lower()


def test_strips_are_limited_with_a_note(session_records, helpers):
    metrics = build_metrics(session_records[:12], {}, [], n_resamples=helpers.RESAMPLES)
    page = report_html.render_html(session_records, metrics, max_strips=5)
    n_runs = sum(r.condition not in ("ignore", "oracle") for r in session_records)
    assert f"Showing 5 of {n_runs} runs" in page
    assert page.count('<div class="strip">') == 5


def test_strip_attribution_matches_the_metrics_row(session_records):
    for record in session_records:
        if record.condition in ("ignore", "oracle"):
            continue
        strip = report_html.token_strip(record, max_tokens=10_000)
        for lab in LABELS:
            assert strip["counts"][lab] == record.metrics[f"attr_{lab}_count"], (record.key, lab)
        post = [c["cls"] for c in strip["cells"] if c["cls"] != "pre"]
        assert len(post) == record.metrics["n_after"]
        assert strip["marker_at"] == record.t0 - strip["truncated_before"]


def test_strip_uses_token_pieces_when_stored(fresh_records):
    record = next(r for r in fresh_records if r.condition == "injection")
    record.texts.generated_pieces = [f"w{i}\n" for i in range(len(record.tokens.generated))]
    strip = report_html.token_strip(record)
    assert strip["has_pieces"] and strip["cells"][0]["text"].startswith("w") and "⏎" in strip["cells"][0]["text"]


def test_cell_formats():
    assert report_html.cell({"aggregation": "km_median", "n": 3, "estimate": None, "median_reached": False,
                             "share_censored": 2 / 3, "ci_low": 4.0, "ci_high": None})["main"] == "not reached"
    km = report_html.cell({"aggregation": "km_median", "n": 3, "estimate": 5.0, "median_reached": True,
                           "share_censored": 0.0, "ci_low": 2.0, "ci_high": None})
    assert km["main"] == "5" and km["ci"] == "[2, open]" and km["note"] == "0% censored"
    rate = report_html.cell({"aggregation": "rate", "n": 4, "k": 1, "estimate": 0.25, "ci_low": 0.05, "ci_high": 0.7})
    assert rate["main"] == "25%" and rate["note"] == "1/4"
    assert report_html.cell(None)["main"] == "–"


def test_kaplan_meier_median_agrees_with_stats():
    from measure.analysis.stats import km_median

    rng = np.random.default_rng(1)
    for _ in range(20):
        times = rng.integers(1, 20, size=12).astype(float)
        censored = rng.random(12) < 0.3
        st, ss = plots.kaplan_meier(times, censored)
        hit = np.flatnonzero(ss <= 0.5 + 1e-12)
        ours = float(st[hit[0]]) if hit.size else None
        assert ours == km_median(times, censored)["estimate"]


def test_mean_band_over_ragged_curves():
    mean, low, high, n = plots.mean_band([np.array([1.0, 2.0, 3.0]), np.array([3.0, 4.0])])
    assert mean.tolist() == [2.0, 3.0, 3.0] and n.tolist() == [2, 2, 1]
    assert np.isnan(low[2]) and low[0] < 2.0 < high[0]


def test_point_order():
    assert sorted(["f0.5", "t16", "-", "t4", "f0.1"], key=plots.point_sort_key) == ["-", "t4", "t16", "f0.1", "f0.5"]


def test_attention_grids_average_each_cell_over_the_runs_that_have_it():
    """Ragged grids (runs of different lengths, a missing value) averaged cell by cell, equal to a
    NaN-padded stack's nanmean; runs with nothing inserted left out."""
    from measure.report.plots import attention_grids

    a = [[0.2, 0.4, 0.6], [0.1, None, 0.3]]
    b = [[0.4, 0.8], [0.3, 0.5], [0.9, 0.7]]
    def run(i, condition, span, grid):
        return Record(key=f"p{i}/{condition}/t8", problem_id=f"p{i}", condition=condition, point="t8",
                      spans={"inserted": span}, arrays={"attention_layers_tokens": {"inserted": grid}})

    records = [run(i, "injection", (5, 9), grid) for i, grid in enumerate((a, b))]
    records.append(run(2, "flush", (5, 5), [[1.0]]))
    stack = np.full((2, 3, 3), np.nan)
    stack[0, :2, :3] = np.array(a, dtype=float)
    stack[1, :3, :2] = b
    grids = attention_grids(records)
    assert set(grids) == {("t8", "injection")} and grids[("t8", "injection")][1] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the cell no run has: all NaN, NaN in both
        expected = np.nanmean(stack, axis=0)
    np.testing.assert_allclose(grids[("t8", "injection")][0], expected, atol=1e-12)
