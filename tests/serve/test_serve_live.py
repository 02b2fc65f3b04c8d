"""Live marks and token messages: exact while tokens stream, and drawn from the token events when
the engine fills their values (r(t), KL) during decoding, from the scored run when it does not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serve_helpers import BASELINE

from measure.analysis.calibration import event_latency
from measure.engine.events import TokenEvent
from measure.serve.experiments import Experiment
from measure.serve.live import LiveRun
from measure.serve.marks import Calibration, CalibrationError, EventRules, FoldRule, LaneMarks, read_calibration
from measure.serve.requests import parse_experiment
from measure.testing import example_pair

RULES = {"detection_latency": EventRules("detection_latency", "log_ratio", (FoldRule(0, 1, 0.5), FoldRule(1, 1, 0.8))),
         "adaptation_latency": EventRules("adaptation_latency", "log_ratio", (FoldRule(0, 2, 0.3), FoldRule(1, 4, 0.1))),
         "adaptation_latency_kl": EventRules("adaptation_latency_kl", "kl_gap", (FoldRule(0, 2, 0.2), FoldRule(1, 2, 0.4)))}


@pytest.mark.parametrize("seed", range(20))
def test_marks_while_streaming_equal_the_marks_of_the_whole_run(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    r = rng.normal(0.2, 0.6, n)
    kl_ignore, kl_oracle = rng.gamma(1.0, 0.3, n), rng.gamma(1.0, 0.3, n)
    marks = LaneMarks(t0=5, events=RULES)
    live = {}
    for i in range(n):
        for mark in marks.add(float(r[i]), {"ignore": float(kl_ignore[i]), "oracle": float(kl_oracle[i])}):
            live[mark["event"]] = mark
    curves = {"log_ratio": r, "kl_gap": kl_ignore - kl_oracle}
    final = {m["event"]: m for m in marks.finish(curves)}
    for name, rules in RULES.items():
        folds = [event_latency(curves[rules.curve], rule.window, rule.threshold) for rule in rules.rules]
        if any(f.censored for f in folds):
            assert name not in live and final[name]["censored"] and final[name]["k"] == n
        else:
            k = max(f.value for f in folds)
            assert live[name]["k"] == k and live[name]["index"] == 5 + k - 1
            assert name not in final  # already marked while streaming, at the same token


def test_tokens_without_values_give_no_marks_until_the_run_is_scored():
    marks = LaneMarks(t0=2, events=RULES)
    assert marks.add(None, None) == [] and marks.curves["log_ratio"] == []
    final = marks.finish({"log_ratio": np.array([0.2, 2.0, 2.0, 2.0, 2.0]), "kl_gap": np.zeros(5)})
    # Adaptation: fold 0 (w 2, > 0.3) fires at k 2, fold 1 (w 4, > 0.1) at k 1; the mark is the later.
    assert {m["event"]: (m["k"], m["index"], m["censored"]) for m in final} == {
        "detection_latency": (2, 3, False), "adaptation_latency": (2, 3, False), "adaptation_latency_kl": (5, 6, True)}


def _live_run(calibration=None) -> tuple[LiveRun, Experiment]:
    spec = parse_experiment({"question_a": "a", "question_b": "b", "points": "2", "max_new_tokens": 8})
    live = LiveRun(None, spec, example_pair(), "typed", calibration)
    return live, Experiment(live, subscribe_grace=60)


def test_token_values_from_the_engine_reach_the_page_and_mark_live():
    calibration = Calibration("run", "m", 0.05, points={"t2": RULES})
    live, experiment = _live_run(calibration)
    # The engine of the future fills r(t) and KL per reference during decoding.
    for index in (2, 3, 4, 5):
        event = TokenEvent("p1", "injection", "t2", index, 7, "x", log_ratio=1.0,
                           kl={"matched": 0.25, "ignore": 0.9, "oracle": 0.1})
        live._token(experiment, event, start=0.0)
    messages = experiment.messages_from(0)
    tokens = [m for m in messages if m["type"] == "token"]
    assert [(m["i"], m["r"], m["kl"]) for m in tokens] == [(i, 1.0, 0.25) for i in (2, 3, 4, 5)]
    marks = {m["event"]: m for m in messages if m["type"] == "mark"}
    assert marks["detection_latency"]["k"] == 1 and marks["detection_latency"]["index"] == 2  # at its first token
    assert marks["adaptation_latency"]["k"] == 1 and marks["adaptation_latency_kl"]["k"] == 1
    # Each mark follows the token that completed its window.
    assert messages.index(marks["adaptation_latency"]) > messages.index(tokens[3])


def test_token_messages_carry_null_when_the_engine_has_no_values_yet():
    live, experiment = _live_run()
    live._token(experiment, TokenEvent("p1", "ignore", "-", 0, 7, "<b>"), start=0.0)
    (message,) = experiment.messages_from(0)
    assert (message["r"], message["kl"], message["piece"], message["lane"]) == (None, None, "<b>", "ignore@-")


def test_calibration_is_read_from_a_finished_run(tmp_path):
    calibration = read_calibration(BASELINE, "baseline")
    assert calibration.model == "embedded:smollm2-135m-instruct" and calibration.alpha == 0.05
    events, why = calibration.for_point("t6")
    assert why is None and set(events) == {"detection_latency", "adaptation_latency", "adaptation_latency_kl"}
    saved = json.loads((BASELINE / "metrics.json").read_text())["calibration"]["events"]["adaptation_latency"]
    assert [r.threshold for r in events["adaptation_latency"].rules] == [f["threshold"] for f in saved["points"]["t6"]["folds"]]
    assert calibration.for_point("t8") == ({}, "baseline calibrated t6, not t8: uncalibrated here")
    with pytest.raises(CalibrationError, match="has not finished"):
        read_calibration(tmp_path, "empty")
    (tmp_path / "metrics.json").write_text('{"counts": {}}')
    with pytest.raises(CalibrationError, match="no calibration section"):
        read_calibration(tmp_path, "old")


def test_an_uncalibrated_point_says_why(tmp_path):
    metrics = json.loads((BASELINE / "metrics.json").read_text())
    point = metrics["calibration"]["events"]["adaptation_latency"]["points"]["t6"]
    point.update(calibrated=False, reason="too few control runs")
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    events, why = read_calibration(tmp_path, "few").for_point("t6")
    assert "adaptation_latency" not in events and why == "adaptation_latency: too few control runs"
