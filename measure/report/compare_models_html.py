"""``compare-models.html``: the cross-model comparison as one self-contained page.

Figures are inline SVG drawn with matplotlib (text kept as escaped SVG text, see
measure.report.plots); every string from the runs goes through Jinja2 autoescaping.
"""

from __future__ import annotations

import math

from markupsafe import Markup

from measure.report.html import environment
from measure.report.plots import _figure, _svg
from measure.report.position import compare_position_html

MODEL_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
EVENT_TITLES = {"adaptation_latency": "adaptation", "adaptation_latency_kl": "adaptation (KL)",
                "detection_latency": "detection"}


def _color(index: int) -> str:
    return MODEL_COLORS[index % len(MODEL_COLORS)]


def _grid(count: int, columns: int = 3) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return math.ceil(count / columns), columns


def curves_svg(result: dict) -> str | None:
    """Mean KL(run || P_matched) after the change, one panel per condition x point, models overlaid."""
    cells = [cell for cell in result["cells"].values() if any(cell["models"].values())]
    if not cells:
        return None
    labels = [model["label"] for model in result["models"]]
    rows, columns = _grid(len(cells))
    fig = _figure(4.0 * columns, 2.6 * rows)
    for index, cell in enumerate(cells):
        ax = fig.add_subplot(rows, columns, index + 1)
        for m, label in enumerate(labels):
            numbers = cell["models"].get(label)
            curve = (numbers or {}).get("curve_kl_matched") or []
            if curve:
                ax.plot(range(1, len(curve) + 1), [math.nan if v is None else v for v in curve],
                        color=_color(m), label=label, linewidth=1.4)
        _label_panel(ax, cell, index, "tokens after the change", "KL(run || matched)")
    return _svg(fig)


def _label_panel(ax, cell: dict, index: int, xlabel: str, ylabel: str) -> None:
    """Title a condition x point panel, label its axes; the first panel carries the legend."""
    ax.set_title(f"{cell['condition']} @ {cell['point']}", fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    if index == 0:
        ax.legend(fontsize=7)


def gap_svg(result: dict) -> str | None:
    """Adaptation gap with its 95% CI per condition x point, one marker per model."""
    cells = list(result["cells"].values())
    labels = [model["label"] for model in result["models"]]
    if not cells:
        return None
    fig = _figure(7.0, 0.45 * len(cells) * max(1, len(labels)) / 1.5 + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    ticks = []
    for row, cell in enumerate(cells):
        ticks.append(f"{cell['condition']} @ {cell['point']}")
        for m, label in enumerate(labels):
            gap = ((cell["models"].get(label) or {}).get("adaptation_gap")) or {}
            if gap.get("estimate") is None:
                continue
            y = row + (m - (len(labels) - 1) / 2) * 0.25
            low, high = gap.get("ci_low"), gap.get("ci_high")
            if low is not None and high is not None:
                ax.plot([low, high], [y, y], color=_color(m), linewidth=1.2)
            ax.plot([gap["estimate"]], [y], "o", color=_color(m), markersize=4, label=label if row == 0 else None)
    ax.set_yticks(range(len(cells)), ticks, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("adaptation gap: mean KL(run || matched), tokens 1-20 (nats)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return _svg(fig)


def attention_depth_svg(result: dict) -> str | None:
    """Attention onto the inserted text by relative layer depth, per condition x point, models overlaid."""
    labels = [model["label"] for model in result["models"]]
    cells = [cell for cell in result["cells"].values()
             if any((n or {}).get("attention_inserted_by_depth") for n in cell["models"].values())]
    if not cells:
        return None
    rows, columns = _grid(len(cells))
    fig = _figure(4.0 * columns, 2.6 * rows)
    for index, cell in enumerate(cells):
        ax = fig.add_subplot(rows, columns, index + 1)
        for m, label in enumerate(labels):
            profile = (cell["models"].get(label) or {}).get("attention_inserted_by_depth")
            if profile:
                ax.plot(profile["depth"], profile["mass"], "-o", color=_color(m), markersize=2.5, linewidth=1.2,
                        label=label)
        _label_panel(ax, cell, index, "relative layer depth", "mass onto inserted text")
    return _svg(fig)


def render_comparison(result: dict) -> str:
    template = environment().get_template("compare_models.html.j2")
    labels = [model["label"] for model in result["models"]]
    figures = {name: Markup(svg) if svg else None for name, svg in (
        ("gap", gap_svg(result)), ("curves", curves_svg(result)), ("attention", attention_depth_svg(result)))}
    return template.render(result=result, labels=labels, figures=figures, events=EVENT_TITLES,
                           title="Cross-model comparison: " + " vs ".join(labels),
                           position_block=compare_position_html(result))  # measure.report.position
