"""``measure compare BASE NEW``: differences between two runs' summaries, and regression gates.

Each run directory needs ``metrics.json`` (or ``samples.jsonl``, from which it is rebuilt in
memory). Values are the aggregate rows of ``metrics.json``: per condition x point with the
variation types pooled (``aggregate_pooled``), and per condition x variation type x point
(``aggregate``).

Gates
-----
A gate is ``[CONDITION/]METRIC.STATISTIC:TOLERANCE``, e.g. ``adaptation_latency.median:+2``,
``kl_oracle_short.mean:5%``, ``injection/outcome_adapted.rate:-0.1``.

- METRIC: a column known to :mod:`measure.metrics.registry` (an unknown name is an error, exit 2).
- STATISTIC: ``mean`` / ``median`` / ``rate`` (the estimate; must match the metric's aggregation:
  ``median`` for Kaplan-Meier latencies, ``rate`` for shares, ``mean`` otherwise), ``estimate``
  (the estimate whatever the aggregation), ``ci_low``, ``ci_high``, ``share_censored``, ``n``.
- TOLERANCE: how far NEW may move from BASE, delta = new - base:

  ========  =====================================================
  ``+N``    may rise by at most N (fails if delta > N; any fall passes)
  ``-N``    may fall by at most N (fails if delta < -N; any rise passes)
  ``N``     may move by at most N either way (fails if abs(delta) > N); ``±N`` is the same
  ``+N%``   relative: N percent of abs(base); likewise ``-N%`` and ``N%``.
            With base = 0 the allowed move is 0.
  ========  =====================================================

  The bound itself passes (delta == N is fine).
- CONDITION/: only that condition's rows; without it every condition is gated.

Check gates (``--max-check CHECK:MAX``) bound the new run's invariant checks absolutely, e.g.
``full_recompute_max_kl:1e-5``: the largest value recorded over its records (``checks`` in
``metrics.json``) must not exceed MAX, and a check the run did not record fails.

Value gates (``--max-value PATH:MAX``) bound values of the new run's ``metrics.json`` absolutely:
PATH is a dotted path of keys, ``*`` matching every key at its level, e.g.
``calibration.lead.points.*.false_event_rate.controls.estimate:0.1`` (the lead event's held-out
false-event rate at every injection point at most 0.1). It fails when a matched value exceeds MAX
or is missing (null), and when the path matches nothing.

A gate is checked on every condition x point row of the pooled table (variation types pooled;
per variation type too with ``per_variation=True`` / ``--per-variation``). It fails when any
checked row fails. Missing values:

- a Kaplan-Meier median that was not reached (S(t) never fell to 1/2, most runs censored) counts
  as +infinity: base 5 -> new "not reached" is a rise beyond any ``+N``; "not reached" in both
  passes;
- a row present in BASE but absent from NEW fails (the measurement disappeared); a row only in
  NEW is reported and not gated;
- any other value missing on exactly one side fails; missing on both sides passes.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from measure.metrics.registry import METRICS, spec_for
from measure.records import METRICS_FILE, SAMPLES_FILE
from measure.report.format import condition_sort_key, fmt, point_sort_key
from measure.report.inputs import read_report_records
from measure.report.summary import build_metrics

#: Metrics shown in the difference table besides the gated ones.
DEFAULT_COMPARE_METRICS = (
    "adaptation_latency", "detection_latency", "adaptation_latency_kl", "adaptation_gap",
    "kl_matched_immediate", "kl_matched_short", "log_ratio_short", "outcome_adapted", "outcome_unfinished",
)
STAT_FIELDS = {"estimate": "estimate", "mean": "estimate", "median": "estimate", "rate": "estimate",
               "ci_low": "ci_low", "ci_high": "ci_high", "share_censored": "share_censored", "n": "n"}
STAT_AGGREGATION = {"mean": "mean", "median": "km_median", "rate": "rate"}
_GATE = re.compile(
    r"^(?:(?P<condition>[^/:]+)/)?(?P<metric>[A-Za-z0-9_]+)\.(?P<stat>[A-Za-z0-9_]+)"
    r":(?P<sign>[+\-±]?)(?P<number>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)(?P<pct>%?)$")


class CompareError(ValueError):
    """A bad gate or unreadable run: a usage error (exit 2), not a regression."""


@dataclass(frozen=True)
class Gate:
    text: str
    metric: str
    stat: str
    tolerance: float
    direction: str  # "+" (may rise by at most), "-" (may fall by at most), "±" (either way)
    relative: bool
    condition: str | None = None

    def allowed(self, base: float) -> float:
        return self.tolerance * abs(base) if self.relative else self.tolerance

    def check(self, base: float | None, new: float | None) -> tuple[bool, str]:
        """(passed, why) for one pair of values (None = missing, inf = median not reached)."""
        if base is None and new is None:
            return True, "missing in both"
        if base is None or new is None:
            return False, f"missing in {'base' if base is None else 'new'}"
        if math.isinf(base) and math.isinf(new) and base == new:
            return True, "not reached in both"
        delta = new - base
        limit = self.allowed(base) if math.isfinite(base) else 0.0
        if self.direction == "+":
            ok = delta <= limit
        elif self.direction == "-":
            ok = delta >= -limit
        else:
            ok = abs(delta) <= limit
        unit = f" ({100 * self.tolerance:g}% of |base|)" if self.relative else ""
        return ok, f"delta {fmt(delta)} vs allowed {self.direction}{fmt(limit)}{unit}"


def parse_gate(text: str) -> Gate:
    """Parse ``[CONDITION/]METRIC.STAT:[+|-|±]N[%]``; raise CompareError naming what is wrong."""
    match = _GATE.match(text.strip())
    if not match:
        raise CompareError(f"bad gate {text!r}: expected METRIC.STATISTIC:TOLERANCE such as "
                           f"'adaptation_latency.median:+2' or 'kl_oracle_short.mean:5%'")
    metric, stat = match["metric"], match["stat"]
    spec = spec_for(metric)
    if spec is None or spec.aggregation == "none":
        names = [name for name, s in METRICS.items() if s.aggregation != "none"]
        close = difflib.get_close_matches(metric, names, n=3)
        raise CompareError(f"gate {text!r}: unknown metric {metric!r} (not an aggregated metric of "
                           f"measure.metrics.registry); "
                           + (f"did you mean {', '.join(close)}? " if close else "")
                           + f"gated metrics include {', '.join(DEFAULT_COMPARE_METRICS)}")
    if stat not in STAT_FIELDS:
        raise CompareError(f"gate {text!r}: unknown statistic {stat!r}; use one of {', '.join(STAT_FIELDS)}")
    want = STAT_AGGREGATION.get(stat)
    if want and want != spec.aggregation:
        right = {v: k for k, v in STAT_AGGREGATION.items()}[spec.aggregation]
        raise CompareError(f"gate {text!r}: {metric} is aggregated as {spec.aggregation}; use {metric}.{right}")
    if stat == "share_censored" and spec.aggregation != "km_median":
        raise CompareError(f"gate {text!r}: {metric} is not a censored latency")
    number = float(match["number"])
    relative = bool(match["pct"])
    return Gate(text, metric, stat, number / 100 if relative else number, match["sign"] or "±", relative,
                match["condition"])


# ------------------------------------------------------------------------ loading


def load_metrics(run: str | Path) -> tuple[dict, list[str]]:
    """A run's metrics dict from DIR/metrics.json, a metrics.json path, or DIR/samples.jsonl."""
    path = Path(run)
    notes: list[str] = []
    candidates = [path] if path.is_file() else [path / METRICS_FILE]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8")), notes
            except ValueError as error:
                raise CompareError(f"{candidate}: not valid JSON ({error})") from None
    samples = path / SAMPLES_FILE
    if samples.is_file():
        records, warnings = read_report_records(samples)
        notes.append(f"{path}: no {METRICS_FILE}; summarised {len(records)} records from {SAMPLES_FILE}")
        return build_metrics(records, warnings=warnings), notes
    raise CompareError(f"{path}: neither {METRICS_FILE} nor {SAMPLES_FILE} found")


def _rows(metrics: dict, level: str) -> dict[tuple, dict]:
    """``{(condition, variation_type, point, metric): row}``; variation_type "all" when pooled."""
    if level == "pooled":
        table = metrics.get("aggregate_pooled")
        if table is None:  # an older metrics.json: only per-variation rows
            return {}
        return {(r.get("condition"), "all", r.get("point"), r.get("metric")): r for r in table}
    return {(r.get("condition"), "null" if r.get("variation_type") is None else r.get("variation_type"),
             r.get("point"), r.get("metric")): r for r in metrics.get("aggregate") or []}


def stat_value(row: dict | None, stat: str) -> float | None:
    """The statistic of an aggregate row; a Kaplan-Meier median not reached is +inf."""
    if row is None:
        return None
    value = row.get(STAT_FIELDS[stat])
    if value is None and STAT_FIELDS[stat] in ("estimate", "ci_high") and row.get("aggregation") == "km_median" \
            and (row.get("n") or 0) > 0:
        return math.inf
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# ------------------------------------------------------------------------ result


@dataclass
class DiffRow:
    condition: str
    variation_type: str
    point: str
    metric: str
    stat: str
    base: float | None
    new: float | None
    gate: str | None = None
    passed: bool | None = None
    why: str = ""

    @property
    def delta(self) -> float | None:
        if self.base is None or self.new is None:
            return None
        if math.isinf(self.base) and math.isinf(self.new):
            return 0.0
        return self.new - self.base


@dataclass
class GateResult:
    gate: Gate
    checked: int
    failures: list[DiffRow] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class CheckGate:
    """An absolute bound on an invariant check of the new run (``metrics.json`` ``checks``):
    ``NAME:MAX`` fails when the largest recorded value exceeds MAX or the check is missing."""

    text: str
    name: str
    bound: float
    value: float | None = None

    @property
    def passed(self) -> bool:
        return self.value is not None and self.value <= self.bound


def parse_check_gate(text: str) -> CheckGate:
    name, _, bound = text.partition(":")
    try:
        value = float(bound)
    except ValueError:
        raise CompareError(f"bad check gate {text!r}: expected CHECK:MAX such as 'full_recompute_max_kl:1e-5'") from None
    if not name or not math.isfinite(value):
        raise CompareError(f"bad check gate {text!r}: expected CHECK:MAX such as 'full_recompute_max_kl:1e-5'")
    return CheckGate(text, name, value)


@dataclass
class ValueGate:
    """An absolute bound on the values at a dotted path of the new run's ``metrics.json``
    (``*`` matches every key of a level): ``PATH:MAX``."""

    text: str
    path: str
    bound: float
    values: list[tuple[str, float | None]] = field(default_factory=list)  # (matched path, value)

    @property
    def passed(self) -> bool:
        return bool(self.values) and all(value is not None and value <= self.bound for _, value in self.values)


def parse_value_gate(text: str) -> ValueGate:
    path, _, bound = text.rpartition(":")
    try:
        value = float(bound)
    except ValueError:
        value = math.nan
    if not path or not math.isfinite(value):
        raise CompareError(f"bad value gate {text!r}: expected PATH:MAX such as "
                           "'calibration.lead.points.*.false_event_rate.controls.estimate:0.1'")
    return ValueGate(text, path, value)


def values_at(obj, path: str) -> list[tuple[str, float | None]]:
    """The values at a dotted ``path`` of ``obj`` (``*``: every key of a dict level), with their
    concrete paths; a value that is not a number is None."""
    found = [("", obj)]
    for part in path.split("."):
        nxt = []
        for where, node in found:
            if not isinstance(node, dict):
                continue
            keys = list(node) if part == "*" else [part] if part in node else []
            nxt.extend((f"{where}.{key}" if where else str(key), node[key]) for key in keys)
        found = nxt
    return [(where, float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None)
            for where, value in found]


@dataclass
class CompareResult:
    base_dir: str
    new_dir: str
    rows: list[DiffRow]
    gates: list[GateResult]
    provenance_diff: list[tuple[str, object, object]]
    notes: list[str]
    check_gates: list[CheckGate] = field(default_factory=list)
    value_gates: list[ValueGate] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return (any(not g.passed for g in self.gates) or any(not c.passed for c in self.check_gates)
                or any(not v.passed for v in self.value_gates))

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def table(self, only_changed: bool = False) -> str:
        header = ("condition", "variation", "point", "metric", "base", "new", "delta", "gate")
        lines = [header]
        for r in self.rows:
            if only_changed and r.delta == 0 and r.passed is not False:
                continue
            status = "" if r.gate is None else ("ok" if r.passed else f"FAIL {r.gate}: {r.why}")
            lines.append((r.condition, r.variation_type, r.point, f"{r.metric}.{r.stat}", _show(r.base), _show(r.new),
                          _show(r.delta, signed=True), status))
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
        return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line[:-1], widths)) + ("  " + line[-1] if line[-1] else "")
                         for line in lines)

    def summary(self) -> str:
        out = [f"compare {self.base_dir} -> {self.new_dir}"]
        out += [f"note: {n}" for n in self.notes]
        if self.provenance_diff:
            out.append("provenance differences:")
            out += [f"  {k}: {json.dumps(b, default=str)} -> {json.dumps(n, default=str)}" for k, b, n in self.provenance_diff]
        for g in self.gates:
            state = "PASS" if g.passed else f"FAIL ({len(g.failures)} of {g.checked} rows)"
            out.append(f"gate {g.gate.text}: {state}")
            for r in g.failures:
                out.append(f"  {r.condition}/{r.variation_type}/{r.point}: base {_show(r.base)} new {_show(r.new)}: {r.why}")
        for c in self.check_gates:
            state = "PASS" if c.passed else "FAIL"
            out.append(f"check {c.text}: {state} (largest recorded {_show(c.value)}, bound {fmt(c.bound)})")
        for v in self.value_gates:
            state = "PASS" if v.passed else "FAIL"
            found = ", ".join(f"{where} = {_show(value)}" for where, value in v.values) or "no value at this path"
            out.append(f"value {v.text}: {state} ({found}; bound {fmt(v.bound)})")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table() + "\n\n" + self.summary()


def _show(value, signed: bool = False) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "not reached" if value > 0 else "-inf"
    text = fmt(value)
    return f"+{text}" if signed and value > 0 else text


def _flat(obj, prefix="") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _sort_key(key: tuple) -> tuple:
    return (key[3], condition_sort_key(key[0]), point_sort_key(key[2]), key[1] != "all", str(key[1]))


def compare(base_dir, new_dir, gates: list[str] | None = None, *, per_variation: bool = False,
            metrics: list[str] | None = None, check_gates: list[str] | None = None,
            value_gates: list[str] | None = None) -> CompareResult:
    """Compare two runs; ``gates`` as in the module docstring, ``check_gates`` as ``CHECK:MAX``
    bounds on the new run's invariant checks, ``value_gates`` as ``PATH:MAX`` bounds on values of
    its metrics.json. Raises CompareError on bad input."""
    parsed = [parse_gate(g) for g in gates or []]
    checks = [parse_check_gate(c) for c in check_gates or []]
    bounds = [parse_value_gate(v) for v in value_gates or []]
    base, notes_b = load_metrics(base_dir)
    new, notes_n = load_metrics(new_dir)
    notes = notes_b + notes_n
    levels = ["pooled", "strata"] if per_variation else ["pooled"]
    base_rows, new_rows = {}, {}
    for level in levels:
        base_rows.update(_rows(base, level))
        new_rows.update(_rows(new, level))
    if not any(k[1] == "all" for k in base_rows) and "pooled" in levels:
        notes.append("base has no pooled table (older metrics.json): gating per variation type")
        base_rows.update(_rows(base, "strata"))
        new_rows.update(_rows(new, "strata"))
    known = {k[3] for k in base_rows} | {k[3] for k in new_rows}
    conditions = {str(k[0]) for k in base_rows} | {str(k[0]) for k in new_rows}
    for g in parsed:
        # A gate that names nothing in the runs would check nothing and pass: refuse it instead.
        if g.condition is not None and g.condition not in conditions:
            raise CompareError(f"gate {g.text!r}: unknown condition {g.condition!r}; the runs have "
                               f"{', '.join(sorted(conditions, key=condition_sort_key)) or 'none'}")
        if g.metric not in known:
            raise CompareError(f"gate {g.text!r}: metric {g.metric!r} is in neither run's summary; they have "
                               f"{', '.join(sorted(known))}")

    gated = {}
    for g in parsed:
        gated.setdefault(g.metric, []).append(g)
    shown = list(dict.fromkeys([*(metrics or DEFAULT_COMPARE_METRICS), *gated]))
    default_stat = {m: ("median" if (spec_for(m) and spec_for(m).aggregation == "km_median") else
                        "rate" if (spec_for(m) and spec_for(m).aggregation == "rate") else "mean") for m in shown}

    rows: list[DiffRow] = []
    results = {g.text: GateResult(g, 0) for g in parsed}
    keys = sorted({k for k in [*base_rows, *new_rows] if k[3] in shown}, key=_sort_key)
    for key in keys:
        condition, vt, point, metric = key
        b, n = base_rows.get(key), new_rows.get(key)
        gates_here = [g for g in gated.get(metric, []) if g.condition in (None, condition)]
        stats_here = list(dict.fromkeys([g.stat for g in gates_here] or [default_stat[metric]]))
        for stat in stats_here:
            row = DiffRow(str(condition), str(vt), str(point), metric, stat, stat_value(b, stat), stat_value(n, stat))
            for g in (g for g in gates_here if g.stat == stat):
                if b is None:
                    row.why = "only in new: not gated"
                    continue
                result = results[g.text]
                result.checked += 1
                passed, why = (False, "row missing in new") if n is None else g.check(row.base, row.new)
                if row.passed is not False:
                    row.gate, row.passed, row.why = g.text, passed, why
                if not passed:
                    result.failures.append(DiffRow(**{**row.__dict__, "gate": g.text, "passed": False, "why": why}))
            rows.append(row)
    for g in parsed:
        if results[g.text].checked == 0:
            where = f"condition {g.condition!r}" if g.condition else "any condition"
            raise CompareError(f"gate {g.text!r}: checked nothing: base has no {g.metric} row for {where}")

    recorded = new.get("checks") or {}
    for c in checks:
        if c.name not in recorded:
            raise CompareError(f"check gate {c.text!r}: no check {c.name!r} in the new run; it has "
                               f"{', '.join(sorted(recorded)) or 'none'}")
        c.value = recorded[c.name].get("max")
    for v in bounds:
        v.values = values_at(new, v.path)

    pb, pn = _flat(base.get("provenance") or {}), _flat(new.get("provenance") or {})
    prov = [(k, pb.get(k), pn.get(k)) for k in sorted(set(pb) | set(pn)) if pb.get(k) != pn.get(k)]
    return CompareResult(str(base_dir), str(new_dir), rows, list(results.values()), prov, notes, checks, bounds)
