"""The "By position" part of the Findings and the notes split, rendered: sentences (metrics.json
``findings.by_position`` and ``findings.notes``), plain text for the terminal, the HTML block of
the report and its figure (share stale and lead-event rate against position, per condition, with
95% Wilson intervals). The numbers come from :mod:`measure.analysis.position`."""

from __future__ import annotations

import math
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from measure.report.format import fmt, fmt_pct

TEMPLATES = Path(__file__).parent / "templates"
ALPHA = 0.05  # a trend "is found" when its Holm-adjusted p is below this


def _rate(entry: dict | None) -> str:
    if not entry or not entry.get("n"):
        return "–"
    return f"{entry['k']}/{entry['n']} ({fmt_pct(entry['estimate'])}, {fmt_pct(entry['ci_low'])}–{fmt_pct(entry['ci_high'])})"


def _p(value) -> str:
    return "n/a" if value is None else ("< 0.001" if value < 0.001 else f"{value:.3f}")


def odds_ratio(term: dict | None, span: float) -> dict | None:
    """A GEE slope as the odds ratio from the first point to the last (``span`` apart)."""
    if not term:
        return None
    return {name: math.exp(min(term[key] * span, 700.0)) for name, key in  # 700: exp() overflows past ~709
            (("estimate", "coef"), ("ci_low", "ci_low"), ("ci_high", "ci_high"))}


def _or_text(ratio: dict | None) -> str:
    return "–" if ratio is None else f"{fmt(ratio['estimate'])} (95% CI {fmt(ratio['ci_low'])}–{fmt(ratio['ci_high'])})"


def direction(entry: dict) -> str:
    """``later worse``, ``earlier worse`` or ``none detected`` for a trend entry: the within-problem
    permutation test's Holm p below ALPHA decides; worse is more stale, or fewer events."""
    test = entry.get("permutation") or {}
    if test.get("p_holm") is None or test["p_holm"] >= ALPHA or not test.get("statistic"):
        return "none detected"
    rising = test["statistic"] > 0
    return "later worse" if rising == (entry["response"] == "stale") else "earlier worse"


def _trend_clause(entry: dict, first: str, last: str) -> tuple[str, dict]:
    test, trend = entry["permutation"], entry["trend"]
    term = trend["terms"].get("position")
    size = (f"GEE odds ratio {first} to {last} {_or_text(odds_ratio(term, entry['position_range']))}"
            if term else f"no GEE estimate ({trend['reason']})")
    text = (f"{size}; within-problem permutation p {_p(test['p'])}, Holm p {_p(test.get('p_holm'))} "
            f"({test['n_runs']} runs, {test['n_problems']} problems): {direction(entry)}")
    return text, {"odds_ratio": odds_ratio(term, entry["position_range"])["estimate"] if term else None,
                  "p": test["p"], "p_holm": test.get("p_holm")}


def _notes_clause(entry: dict, first: str, last: str) -> str:
    fit = entry["with_notes"]
    if not fit["terms"]:
        return f"with the notes flag as a covariate: no fit ({fit['reason']})"
    position, notes = fit["terms"]["position"], fit["terms"]["notes_known"]
    return (f"with the notes flag as a covariate: position {first} to {last} odds ratio "
            f"{_or_text(odds_ratio(position, entry['position_range']))} (p {_p(position['p'])}), notes odds ratio "
            f"{_or_text(odds_ratio(notes, 1.0))} (p {_p(notes['p'])})")


def position_sentences(section: dict) -> list[dict]:
    """Per condition: shares stale and event rates over the points, each trend and its notes fit."""
    if not section or not section.get("available"):
        return []
    points, tau = section["points"], section["tau"]
    first, last = points[0], points[-1]
    out = []
    for condition in section["conditions"]:
        rows = [r for r in section["rows"] if r["condition"] == condition]
        stale = ", ".join(f"{_rate(r['outcomes']['stale'])} at {r['point']}" for r in rows)
        events = ", ".join(f"{_rate(r['event'])} at {r['point']}" for r in rows)
        rmst = ", ".join(f"{fmt(r['restricted_mean_latency']['estimate'])} at {r['point']}" for r in rows)
        entries = {e["response"]: e for e in section["trends"] if e["condition"] == condition}
        stale_trend, stale_cites = _trend_clause(entries["stale"], first, last)
        event_trend, event_cites = _trend_clause(entries["event"], first, last)
        text = (f"{condition}: stale {stale}; trend in stale: {stale_trend}; {_notes_clause(entries['stale'], first, last)}. "
                f"{section['event']} event within {tau} tokens: {events}; restricted mean latency (tokens, up to {tau}): "
                f"{rmst}; trend in the event: {event_trend}; {_notes_clause(entries['event'], first, last)}.")
        out.append({"condition": condition, "text": text,
                    "direction": {"stale": direction(entries["stale"]), "event": direction(entries["event"])},
                    "cites": {"stale": stale_cites, "event": event_cites}})
    return out


def _count(side: dict) -> str:
    return f"{side.get('k', 0)} of {side.get('n', 0)}"


def notes_sentences(notes: dict | None) -> list[dict]:
    """Per condition and point with runs on both sides of the flag: outcomes and events split."""
    out = []
    for row in (notes or {}).get("rows", []):
        if row["n_notes"] == 0 or row["n_notes"] + row["n_unknown"] == row["n_runs"]:
            continue  # no split to show: every known flag is the same
        adapted, stale, event = row["adapted"], row["stale"], row["event"]
        text = (f"{row['condition']} at {row['point']}: of the solved runs that had already written a quantity the "
                f"change affects before it, {_count(adapted['with_notes'])} adapted and {_count(stale['with_notes'])} "
                f"stale; of those that had not, {_count(adapted['without_notes'])} adapted and "
                f"{_count(stale['without_notes'])} stale (Fisher p {_p(adapted['p'])} adapted, {_p(stale['p'])} stale)"
                + (f"; {notes['event']} event in {_count(event['with_notes'])} vs {_count(event['without_notes'])} "
                   f"runs on changed problems (Fisher p {_p(event['p'])})"
                   if event["with_notes"].get("n") or event["without_notes"].get("n")
                   else f"; no known {notes['event']} event (uncalibrated)")
                + (f"; {row['n_unknown']} runs with no flag recorded" if row["n_unknown"] else "") + ".")
        out.append({"condition": row["condition"], "point": row["point"], "text": text,
                    "cites": {"adapted_p": adapted["p"], "stale_p": stale["p"], "event_p": event["p"]}})
    return out


def _ci(entry: dict) -> str:
    if entry.get("ci_low") is None or entry.get("ci_high") is None:
        return "no CI: a stratum has an empty cell"
    return f"95% CI {fmt(entry['ci_low'])}–{fmt(entry['ci_high'])}"


def pooled_notes_sentences(notes: dict | None) -> list[dict]:
    """Per condition and outcome: the notes split over all points, stratified by point."""
    out = []
    for entry in (notes or {}).get("pooled", []):
        if entry["odds_ratio"] is None:
            continue
        text = (f"{entry['condition']}, all points: {entry['outcome']} in {_rate(entry['with_notes'])} of the solved runs "
                f"with notes written before the change and {_rate(entry['without_notes'])} of those without; "
                f"Mantel-Haenszel odds ratio stratified by point {fmt(entry['odds_ratio'])} ({_ci(entry)}), "
                f"p {_p(entry['p'])}, over {entry['n_points']} "
                f"point(s) with runs on both sides ({entry['n_runs']} runs).")
        out.append({"condition": entry["condition"], "outcome": entry["outcome"], "text": text,
                    "cites": {"odds_ratio": entry["odds_ratio"], "p": entry["p"]}})
    return out


def position_findings(metrics: dict) -> dict:
    """The ``by_position`` and ``notes`` entries of the ``findings`` section."""
    section = metrics.get("by_position") or {}
    return {"by_position": {"available": bool(section.get("available")), "reason": section.get("reason"),
                            "sentences": position_sentences(section),
                            "partial_problems": section.get("partial_problems", [])},
            "notes": pooled_notes_sentences(metrics.get("notes")) + notes_sentences(metrics.get("notes"))}


def position_text(findings: dict) -> list[str]:
    """Lines for the terminal (``findings_text``)."""
    lines = []
    by_position = findings.get("by_position") or {}
    if by_position.get("sentences"):
        lines.append("By position")
        lines.extend(f"  - {s['text']}" for s in by_position["sentences"])
        for problem in by_position.get("partial_problems", []):
            lines.append(f"  * {problem['problem_id']} has no run at {', '.join(problem['missing_points'])}")
    if findings.get("notes"):
        lines.append("Notes written before the change")
        lines.extend(f"  - {s['text']}" for s in findings["notes"])
    return lines


def position_figure_svg(section: dict, title: str | None = None) -> str | None:
    """Share stale (solved problems) and lead-event rate (changed problems) against position, per
    condition, with 95% Wilson intervals; conditions offset a little along x so bars stay apart."""
    if not section or not section.get("available"):
        return None
    from measure.report.plots import _figure, _svg, color_for  # matplotlib only when a figure is drawn

    fig = _figure(9.0, 3.2)
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    conditions = section["conditions"]
    positions = sorted({r["position"] for r in section["rows"]})
    step = (positions[-1] - positions[0]) / max(1, len(positions) - 1) if len(positions) > 1 else 1.0
    for index, condition in enumerate(conditions):
        rows = [r for r in section["rows"] if r["condition"] == condition]
        offset = (index - (len(conditions) - 1) / 2) * step * 0.06
        for ax, pick in zip(axes, (lambda r: r["outcomes"]["stale"], lambda r: r["event"])):
            shown = [(r["position"] + offset, pick(r)) for r in rows if pick(r).get("estimate") is not None]
            if not shown:
                continue
            xs, entries = zip(*shown)
            ys = [e["estimate"] for e in entries]
            errors = [[y - e["ci_low"] for y, e in zip(ys, entries)], [e["ci_high"] - y for y, e in zip(ys, entries)]]
            ax.errorbar(xs, ys, yerr=errors, color=color_for(condition), marker="o", markersize=3.5, linewidth=1.2,
                        capsize=2, label=condition)
    if not any(r["event"].get("estimate") is not None for r in section["rows"]):
        axes[1].text(0.5, 0.5, "no run with a known event\n(uncalibrated at these points)", ha="center", va="center",
                     transform=axes[1].transAxes, fontsize=8, color="#656d76")
    kind = section["point_kind"]
    axes[0].set_title(f"share stale (problems solved uninterrupted, n = {section['n_solved']})", fontsize=9)
    axes[1].set_title(f"{section['event']} event within {section['tau']} tokens (changed problems)", fontsize=9)
    for ax in axes:
        ax.set_xlabel(f"injection point ({kind})", fontsize=8)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xticks(positions)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("share of runs (95% CI)", fontsize=8)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _svg(fig)




def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def position_html(metrics: dict) -> Markup:
    """The report's By-position and notes block (empty when the run has neither)."""
    findings = metrics.get("findings") or {}
    by_position = findings.get("by_position") or {}
    notes = findings.get("notes") or []
    section = metrics.get("by_position") or {}
    if not by_position.get("available") and not notes:
        return Markup("")
    figure = position_figure_svg(section)
    return Markup(_environment().get_template("position.html.j2").render(
        by_position=by_position, section=section, notes=notes, rate=_rate, figure=Markup(figure) if figure else None))


# ------------------------------------------------------------------------ compare-models


def compare_position(sections: dict[str, dict]) -> dict | None:
    """The models' By-position sections side by side (``compare-models.json`` key ``by_position``),
    or None unless every model's run has one."""
    if not sections or not all(section.get("available") for section in sections.values()):
        return None
    labels = list(sections)
    keys = []
    for section in sections.values():
        keys += [(row["condition"], row["point"]) for row in section["rows"] if (row["condition"], row["point"]) not in keys]
    rows = []
    for condition, point in keys:
        cells = {}
        for label in labels:
            row = next((r for r in sections[label]["rows"] if (r["condition"], r["point"]) == (condition, point)), None)
            cells[label] = None if row is None else {"stale": row["outcomes"]["stale"], "adapted": row["outcomes"]["adapted"],
                                                     "event": row["event"], "rmst": row["restricted_mean_latency"]}
        rows.append({"condition": condition, "point": point, "models": cells})
    trends = []
    for entry in sections[labels[0]]["trends"]:
        cells = {}
        for label in labels:
            other = next((e for e in sections[label]["trends"]
                          if (e["condition"], e["response"]) == (entry["condition"], entry["response"])), None)
            term = (other or {}).get("trend", {}).get("terms", {}).get("position")
            cells[label] = None if other is None else {
                "odds_ratio": odds_ratio(term, other["position_range"]), "p": other["permutation"]["p"],
                "p_holm": other["permutation"].get("p_holm"), "direction": direction(other),
                "reason": other["trend"].get("reason")}
        trends.append({"condition": entry["condition"], "response": entry["response"], "models": cells})
    return {"models": labels, "tau": {label: s["tau"] for label, s in sections.items()},
            "event": sections[labels[0]]["event"], "rows": rows, "trends": trends, "sections": sections}




def compare_position_html(result: dict) -> Markup:
    """The compare-models page's By-position block (empty unless every run has the section)."""
    side = result.get("by_position")
    if not side:
        return Markup("")
    figures = [(label, Markup(svg)) for label in side["models"]
               if (svg := position_figure_svg(side["sections"][label], title=label))]
    return Markup(_environment().get_template("compare_position.html.j2").render(side=side, rate=_rate, figures=figures))
