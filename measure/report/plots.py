"""Inline SVG figures for ``report.html``, drawn with matplotlib (Agg, no pyplot global state).

Each ``*_svg`` function takes sample records and returns one ``<svg>`` element as a string
(XML prolog and DOCTYPE stripped), or None when there is nothing to draw. Text is kept as SVG
text (``svg.fonttype = "none"``), which matplotlib XML-escapes, so the figures are small and
searchable and cannot carry markup from the data.

Curves are indexed by position after the change: position k = 1 is array index ``t0`` (the first
token generated after the change), as in :mod:`measure.metrics.windows`. Bands are mean +- 1.96
standard errors over the runs that reach that position (a normal approximation: per-position
bootstraps would cost more than the whole report; the tables carry the bootstrap CIs).
"""

from __future__ import annotations

import io
import math
import warnings
from collections import defaultdict
from contextlib import contextmanager

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from measure.metrics.divergence import log_ratio
from measure.records.curves import as_curve, as_grid
from measure.records.record import Record
from measure.report.format import condition_sort_key, point_sort_key
from measure.report.strategies import CURVES as STRATEGY_CURVES

COLORS = {
    "ignore": "#7f7f7f", "oracle": "#2ca02c", "injection": "#d62728", "flush": "#1f77b4",
    "partial": "#9467bd", "noise": "#8c564b", "repeat": "#e377c2",
}
EXTRA_COLORS = ("#17becf", "#bcbd22", "#ff7f0e", "#393b79", "#637939")
CURVES = (
    ("kl:ignore", "KL(run || ignore)"),
    ("kl:oracle", "KL(run || oracle)"),
    ("kl:matched", "KL(run || matched)"),
    ("ratio", "r(t) = log P_oracle - log P_ignore"),
)


_EXTRA_ASSIGNED: dict[str, str] = {}  # conditions outside COLORS, in order of first use


def color_for(condition) -> str:
    """The condition's colour; conditions outside COLORS get the extra colours in turn."""
    if condition in COLORS:
        return COLORS[condition]
    if condition not in _EXTRA_ASSIGNED:
        _EXTRA_ASSIGNED[condition] = EXTRA_COLORS[len(_EXTRA_ASSIGNED) % len(EXTRA_COLORS)]
    return _EXTRA_ASSIGNED[condition]




def curve_after_t0(record: Record, curve: str) -> np.ndarray:
    """One per-position curve of a record from index t0 on: ``(n_after,)``, NaN where missing.
    ``curve``: ``ratio`` (r(t)), or an array group and its reference (``kl:matched``)."""
    if record.arrays is None:
        return np.array([])
    t0 = record.t0 or 0
    if curve == "ratio":
        refs = record.arrays.logprob_ref
        if "oracle" not in refs or "ignore" not in refs:
            return np.array([])
        values = log_ratio(as_curve(refs["oracle"]), as_curve(refs["ignore"]))
    else:
        group, ref = curve.split(":")
        values = as_curve((getattr(record.arrays, group, None) or {}).get(ref))
    return values[t0:]


def mean_band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per position: mean, low, high (mean +- 1.96 SE) and n over ragged curves."""
    length = max((len(c) for c in curves), default=0)
    grid = np.full((len(curves), length), np.nan)
    for i, c in enumerate(curves):
        grid[i, : len(c)] = c
    n = np.sum(np.isfinite(grid), axis=0)
    with np.errstate(all="ignore"), _quiet():
        mean = np.nanmean(grid, axis=0)
        sd = np.nanstd(grid, axis=0, ddof=1)
    se = np.where(n >= 2, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    return mean, mean - 1.96 * se, mean + 1.96 * se, n


@contextmanager
def _quiet():
    """Silence numpy's empty-slice warnings (all-NaN columns are expected at the ragged end)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Figure) -> str:
    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg")
    text = buffer.getvalue()
    start = text.find("<svg")
    return text[start:].strip()


def _by_point_condition(records: list[Record]) -> dict[str, dict[str, list[Record]]]:
    table: dict[str, dict[str, list[Record]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        table[r.point][r.condition].append(r)
    return {p: dict(sorted(table[p].items(), key=lambda kv: condition_sort_key(kv[0])))
            for p in sorted(table, key=point_sort_key)}


def _condition_bands(ax, by_condition: dict[str, list[Record]], curve: str, max_positions: int | None) -> None:
    """One mean line and 95% band per condition of ``curve`` after the change, on ``ax``."""
    for condition, runs in by_condition.items():
        curves = [c for c in (curve_after_t0(r, curve) for r in runs) if c.size]
        if not curves:
            continue
        mean, low, high, _ = mean_band(curves)
        if max_positions:
            mean, low, high = mean[:max_positions], low[:max_positions], high[:max_positions]
        k = np.arange(1, len(mean) + 1)
        ax.plot(k, mean, color=color_for(condition), lw=1.4, label=f"{condition} (n={len(curves)})")
        ax.fill_between(k, low, high, color=color_for(condition), alpha=0.15, lw=0)
    if curve == "ratio":
        ax.axhline(0, color="black", lw=0.6, ls=":")
    ax.set_xlabel("tokens since the change", fontsize=8)
    ax.tick_params(labelsize=7)


def _curve_grid(table: dict, curves, width: float, row_height: float, max_positions: int | None, title_of) -> str:
    """Rows = injection points, columns = ``curves``; ``title_of(title, point)`` names each panel."""
    fig = _figure(width, row_height * len(table) + 0.4)
    axes = fig.subplots(len(table), len(curves), squeeze=False)
    for row, (point, by_condition) in enumerate(table.items()):
        for col, (curve, title) in enumerate(curves):
            ax = axes[row][col]
            _condition_bands(ax, by_condition, curve, max_positions)
            ax.set_title(title_of(title, point), fontsize=9)
            if col == 0:
                ax.set_ylabel("nats" if curve != "ratio" else "", fontsize=8)
            if col == len(curves) - 1:
                ax.legend(fontsize=7, loc="best", frameon=False)
    return _svg(fig)


def adaptation_curves_svg(records: list[Record], max_positions: int | None = None) -> str | None:
    """Rows = injection points, columns = KL to each reference and r(t); one line per condition."""
    table = _by_point_condition(records)
    if not table:
        return None

    def title_of(title, point):
        return f"{title}\n{'reference runs (t0 = 0)' if point == '-' else f'point {point}'}"

    return _curve_grid(table, CURVES, 13, 2.6, max_positions, title_of)


FINDINGS_CURVES = (("kl:matched", "KL(run || matched)"), ("ratio", "r(t) = log P_oracle - log P_ignore"))


def findings_curves_svg(records: list[Record], max_positions: int = 40) -> str | None:
    """The Findings figure: KL to P_matched and r(t) per condition after the change, one row per
    injection point, over the changed problems as the findings are (the reference runs, which
    have no point, and identical-problem controls are left out)."""
    changed = [r for r in records if r.variation_type is not None]
    table = {point: runs for point, runs in _by_point_condition(changed).items() if point != "-"}
    if not table:
        return None
    return _curve_grid(table, FINDINGS_CURVES, 11, 2.4, max_positions, lambda title, point: f"{title}, point {point}")


def kaplan_meier(times, censored) -> tuple[np.ndarray, np.ndarray]:
    """Product-limit survival S(t): step times (starting at 0) and S just after each time."""
    t = np.asarray(times, dtype=float)
    c = np.asarray(censored, dtype=bool)
    steps_t, steps_s, s = [0.0], [1.0], 1.0
    for u in np.unique(t[~c]):
        at_risk = int(np.sum(t >= u))
        events = int(np.sum((t == u) & ~c))
        if at_risk:
            s *= 1.0 - events / at_risk
        steps_t.append(float(u))
        steps_s.append(s)
    if t.size:
        steps_t.append(float(t.max()))
        steps_s.append(s)
    return np.array(steps_t), np.array(steps_s)


def survival_svg(records: list[Record], metric: str = "adaptation_latency") -> str | None:
    """Kaplan-Meier curves of a censored latency per condition, one panel per injection point."""
    table = _by_point_condition(records)
    panels = []
    for point, by_condition in table.items():
        series = {}
        for condition, runs in by_condition.items():
            pairs = [(r.metrics.get(metric), r.metrics.get(f"{metric}_censored")) for r in runs]
            pairs = [(v, bool(c)) for v, c in pairs if isinstance(v, (int, float)) and math.isfinite(v) and c is not None]
            if pairs:
                series[condition] = pairs
        if series:
            panels.append((point, series))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(4.4 * cols, 2.9 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (point, series) in zip(axes.flat, panels):
        for condition, pairs in series.items():
            times, cens = zip(*pairs)
            st, ss = kaplan_meier(times, cens)
            n_cens = sum(cens)
            ax.step(st, ss, where="post", color=color_for(condition), lw=1.4,
                    label=f"{condition} (n={len(times)}, {n_cens} censored)")
            ct = np.array([t for t, c in pairs if c], dtype=float)
            if ct.size:  # censoring ticks at S(t) of each censored time
                s_at = np.array([ss[np.searchsorted(st, x, side="right") - 1] for x in ct])
                ax.plot(ct, s_at, "|", color=color_for(condition), ms=8)
        ax.axhline(0.5, color="black", lw=0.6, ls=":")
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{metric}: " + ("reference runs" if point == "-" else f"point {point}"), fontsize=9)
        ax.set_xlabel("tokens since the change", fontsize=8)
        ax.set_ylabel("share without the event yet", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, frameon=False)
    return _svg(fig)


def attention_grids(records: list[Record]) -> dict[tuple[str, str], tuple[np.ndarray, int]]:
    """Mean attention mass onto the inserted span, ``(layers, n_after)`` per (point, condition).

    Runs of different lengths are averaged where they overlap (each cell over the runs that have
    it); the int is the number of runs. Records without ``arrays.attention_layers_tokens.inserted``,
    or whose inserted span is empty, are skipped. Summed run by run (a sum and a count per cell),
    so memory does not grow with the number of runs.
    """
    sums: dict[tuple[str, str], np.ndarray] = {}
    counts: dict[tuple[str, str], np.ndarray] = {}
    runs: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        grid = ((r.arrays.attention_layers_tokens if r.arrays else None) or {}).get("inserted")
        span = (r.spans or {}).get("inserted")
        if grid is None or len(grid) == 0 or (span and len(span) == 2 and span[1] <= span[0]):
            continue  # nothing was inserted (references, flush, partial): the mass is 0 by construction
        arr = as_grid(grid)
        if arr.ndim != 2 or not arr.size:
            continue
        key = (r.point, r.condition)
        total, count = sums.get(key, np.zeros((0, 0))), counts.get(key, np.zeros((0, 0), dtype=np.int64))
        shape = (max(total.shape[0], arr.shape[0]), max(total.shape[1], arr.shape[1]))
        if shape != total.shape:
            grown, grown_count = np.zeros(shape), np.zeros(shape, dtype=np.int64)
            grown[: total.shape[0], : total.shape[1]], grown_count[: count.shape[0], : count.shape[1]] = total, count
            total, count = grown, grown_count
        finite = np.isfinite(arr)
        total[: arr.shape[0], : arr.shape[1]] += np.where(finite, arr, 0.0)
        count[: arr.shape[0], : arr.shape[1]] += finite
        sums[key], counts[key] = total, count
        runs[key] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return {key: (np.where(counts[key] > 0, sums[key] / counts[key], np.nan), runs[key]) for key in sums}


def attention_heatmap_svg(records: list[Record], max_positions: int = 64) -> str | None:
    """Heatmaps layer x tokens-since-change of attention onto the inserted text; None if not captured."""
    grids = attention_grids(records)
    if not grids:
        return None
    keys = sorted(grids, key=lambda k: (point_sort_key(k[0]), condition_sort_key(k[1])))
    vmax = max((float(np.nanmax(g)) for g, _ in grids.values() if np.isfinite(g).any()), default=1.0) or 1.0
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = _figure(4.4 * cols, 2.5 * rows + 0.3)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    image = None
    for ax, key in zip(axes.flat, keys):
        grid, n = grids[key]
        grid = grid[:, :max_positions]
        image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", origin="lower", cmap="viridis", vmin=0.0, vmax=vmax,
                          interpolation="nearest", extent=(0.5, grid.shape[1] + 0.5, -0.5, grid.shape[0] - 0.5))
        ax.set_title(f"{key[1]} at {key[0]} (n={n})", fontsize=9)
        ax.set_xlabel("tokens since the change", fontsize=8)
        ax.set_ylabel("layer", fontsize=8)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="attention mass on inserted text")
    return _svg(fig)


#: Update panels per strategy figure at most (first, last and evenly spaced between): a streamed
#: erratum has one update per token.
MAX_UPDATE_PANELS = 4


def update_panels(n_updates: int, limit: int = MAX_UPDATE_PANELS) -> list[int]:
    """Indices of the updates drawn: all when at most ``limit``, else first, last and evenly spaced."""
    if n_updates <= limit:
        return list(range(n_updates))
    return sorted({int(round(v)) for v in np.linspace(0, n_updates - 1, limit)})


def _series(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def strategy_curves_svg(entry: dict, color: str | None = None) -> str | None:
    """One strategy's curves aligned at each update (an entry of the ``strategies`` section of
    ``metrics.json``, see :mod:`measure.report.strategies`): columns = updates, rows = KL(run ||
    P_matched) and r(t); x = tokens since the update, the solid vertical line marks the update
    (between x = 0 and x = 1), dotted ones the median position of the update before and after it.
    None when no update reached any run."""
    updates = [u for u in (entry.get("updates") or []) if u.get("n_delivered")]
    chosen = [updates[i] for i in update_panels(len(updates))]
    if not chosen:
        return None
    color = color or color_for(entry.get("condition"))
    fig = _figure(min(3.4 * len(chosen), 14) + 0.6, 4.8)
    axes = fig.subplots(len(STRATEGY_CURVES), len(chosen), squeeze=False, sharey="row")
    for col, update in enumerate(chosen):
        for row, (curve, label) in enumerate(STRATEGY_CURVES.items()):
            ax = axes[row][col]
            data = update["curves"][curve]
            x = np.asarray(data["x"], dtype=float)
            mean, low, high = _series(data["mean"]), _series(data["ci_low"]), _series(data["ci_high"])
            ax.plot(x, mean, color=color, lw=1.4, label=f"mean (n={update['n_delivered']})")
            ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0)
            ax.axvline(0.5, color="black", lw=0.9)
            for offset in (update.get("offset_previous"), update.get("offset_next")):
                if offset is not None and x[0] <= offset + 0.5 <= x[-1]:
                    ax.axvline(offset + 0.5, color="black", lw=0.6, ls=":")
            if curve == "log_ratio":
                ax.axhline(0, color="black", lw=0.6, ls=":")
            if row == 0:
                missed = f", {update['n_undelivered']} ended before it" if update.get("n_undelivered") else ""
                ax.set_title(f"update {update['index'] + 1} (n={update['n_delivered']}{missed})", fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
            if row == len(STRATEGY_CURVES) - 1:
                ax.set_xlabel(f"tokens since update {update['index'] + 1}", fontsize=8)
            ax.tick_params(labelsize=7)
    return _svg(fig)


__all__ = [
    "adaptation_curves_svg", "survival_svg", "attention_heatmap_svg", "kaplan_meier",
    "mean_band", "curve_after_t0", "attention_grids", "condition_sort_key", "point_sort_key",
    "strategy_curves_svg", "update_panels",
]
