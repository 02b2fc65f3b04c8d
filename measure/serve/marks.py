"""Detection and adaptation marks for a live run, from a finished run's calibration.

A single live problem has no control runs of its own, so its latency events cannot be
calibrated on it (docs/METHOD.md). The user may pick a finished ``measure run`` folder; its
``metrics.json`` ``calibration`` section holds, per event and injection point, the window and
threshold fitted for each fold (on the control runs of the other folds). A live problem belongs to
no fold, so each fold's rule is a held-out rule for it with a false-event rate of at most alpha; a
mark is drawn where *every* rule has fired (the latest of their tokens), which keeps that bound
without choosing between them. Points the calibration lacks, or did not calibrate, get no marks
and say why; without a calibration the page shows the raw curves labelled "uncalibrated".

Marks are exact while tokens stream: the event of a window rule is the first token k from which
the curve stays above the threshold for w tokens, so once a window has been seen complete and
above it, no later token can move the event earlier (:func:`measure.analysis.calibration.event_latency`
on the curve so far).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from measure.analysis.calibration import EVENTS, event_latency
from measure.records import METRICS_FILE
from measure.records.run_folder import RunFileError, read_metrics_json


class CalibrationError(ValueError):
    """A run folder's calibration cannot be read; the message names the file."""


@dataclass(frozen=True)
class FoldRule:
    fold: int
    window: int
    threshold: float


@dataclass(frozen=True)
class EventRules:
    """One event at one point: the curve it reads and the rule of each fold."""

    event: str
    curve: str  # "log_ratio" | "kl_gap"
    rules: tuple[FoldRule, ...]

    def latency(self, curve) -> tuple[int, bool]:
        """(k, censored) on the curve after the change: the later of the folds' events."""
        values = [event_latency(curve, rule.window, rule.threshold) for rule in self.rules]
        censored = any(value.censored for value in values)
        n = int(np.asarray(curve).size)
        return (n, True) if censored else (max(value.value for value in values), False)

    def as_dict(self) -> dict:
        return {"event": self.event, "curve": self.curve,
                "rules": [{"fold": r.fold, "window": r.window, "threshold": r.threshold} for r in self.rules]}


@dataclass
class Calibration:
    """The events of one run folder's calibration, per injection point label."""

    source: str
    model: str | None
    alpha: float | None
    points: dict[str, dict[str, EventRules]] = field(default_factory=dict)
    reasons: dict[str, dict[str, str]] = field(default_factory=dict)  # point -> event -> why not calibrated

    def for_point(self, label: str) -> tuple[dict[str, EventRules], str | None]:
        """The calibrated events at ``label``, and why some or all are missing (None if none are)."""
        if label not in self.points and label not in self.reasons:
            known = ", ".join(sorted(set(self.points) | set(self.reasons))) or "no point"
            return {}, f"{self.source} calibrated {known}, not {label}: uncalibrated here"
        reasons = self.reasons.get(label, {})
        why = "; ".join(f"{event}: {reason}" for event, reason in reasons.items()) or None
        return self.points.get(label, {}), why

    def summary(self) -> dict:
        return {"source": self.source, "model": self.model, "alpha": self.alpha,
                "points": {label: [rules.as_dict() for rules in events.values()] for label, events in self.points.items()},
                "uncalibrated": self.reasons}


def read_calibration(folder: Path, source: str) -> Calibration:
    """The calibration section of ``folder/metrics.json``; CalibrationError naming the file and
    the entry when it is missing, unreadable or of an unexpected shape."""
    path = Path(folder) / METRICS_FILE
    try:
        metrics = read_metrics_json(folder)
    except FileNotFoundError:
        raise CalibrationError(f"{path} not found: the run has not finished (its calibration is written at the end)") from None
    except RunFileError as error:
        raise CalibrationError(str(error)) from None
    section = metrics.get("calibration")
    if not isinstance(section, dict) or not isinstance(section.get("events"), dict):
        raise CalibrationError(f"{path} has no calibration section (written by an older version?)")
    provenance = metrics.get("provenance")
    model = provenance.get("model") if isinstance(provenance, dict) else None
    name = model.get("name") if isinstance(model, dict) else None
    alpha = section.get("alpha")
    calibration = Calibration(source=source, model=name if isinstance(name, str) else None,
                              alpha=alpha if isinstance(alpha, (int, float)) and not isinstance(alpha, bool) else None)
    # Marks are window rules (exact while tokens stream); the sequential events are not drawn live.
    curves = {event.name: event.curve for event in EVENTS if not event.sequential}
    for event, entry in section["events"].items():
        if event not in curves:
            continue
        points = entry.get("points") if isinstance(entry, dict) else None
        if not isinstance(points, dict):
            raise CalibrationError(f"{path}: calibration.events.{event} has no 'points' object")
        for label, point in points.items():
            where = f"{path}: calibration.events.{event}.points.{label}"
            if not isinstance(point, dict):
                raise CalibrationError(f"{where} is not an object")
            folds = point.get("folds") or []
            if not isinstance(folds, list):
                raise CalibrationError(f"{where}: 'folds' is not a list")
            rules = [_fold_rule(fold, where) for fold in folds]
            rules = [rule for rule in rules if rule is not None]
            if point.get("calibrated") and rules and len(rules) == len(folds):
                calibration.points.setdefault(label, {})[event] = EventRules(event, curves[event], tuple(rules))
            else:
                reason = point.get("reason")
                calibration.reasons.setdefault(label, {})[event] = reason if isinstance(reason, str) else "not calibrated"
    return calibration


def _fold_rule(fold, where: str) -> FoldRule | None:
    """One fold's rule; None for a fold that fitted none (no window or threshold)."""
    if not isinstance(fold, dict):
        raise CalibrationError(f"{where}: a fold is not an object")
    if fold.get("threshold") is None or fold.get("window") is None:
        return None
    try:
        # scores_fold: the fold the rule scores; fit_fold: the fold a two-fold run fitted it on
        rule = FoldRule(int(fold["scores_fold"] if "scores_fold" in fold else fold["fit_fold"]), int(fold["window"]),
                        float(fold["threshold"]))
    except (KeyError, TypeError, ValueError, OverflowError):
        raise CalibrationError(f"{where}: a fold's scores_fold, window or threshold is not a number") from None
    return rule if math.isfinite(rule.threshold) else None


def _value(value) -> float:
    return math.nan if value is None else float(value)


class LaneMarks:
    """The marks of one forked run, fed token by token (when values are known) and at its end."""

    def __init__(self, t0: int, events: dict[str, EventRules]):
        self.t0 = t0
        self.events = events
        self.curves: dict[str, list[float]] = {"log_ratio": [], "kl_gap": []}
        self.reached: dict[str, int] = {}

    def _mark(self, event: str, k: int, censored: bool) -> dict:
        return {"event": event, "k": k, "index": self.t0 + k - 1, "censored": censored}

    def add(self, log_ratio: float | None, kl: dict | None) -> list[dict]:
        """New marks after one more token after the change (nothing when its values are unknown)."""
        if log_ratio is None and not kl:
            return []
        gap = _value((kl or {}).get("ignore")) - _value((kl or {}).get("oracle"))
        self.curves["log_ratio"].append(_value(log_ratio))
        self.curves["kl_gap"].append(gap)
        marks = []
        for name, rules in self.events.items():
            if name in self.reached:
                continue
            k, censored = rules.latency(self.curves[rules.curve])
            if not censored:
                self.reached[name] = k
                marks.append(self._mark(name, k, False))
        return marks

    def finish(self, curves: dict[str, np.ndarray]) -> list[dict]:
        """Every event on the complete curves after the change: reached ones not yet marked, and
        the censored ones (not reached within the run's tokens)."""
        marks = []
        for name, rules in self.events.items():
            k, censored = rules.latency(curves[rules.curve])
            if censored or self.reached.get(name) != k:
                if not censored:
                    self.reached[name] = k
                marks.append(self._mark(name, k, censored))
        return marks
