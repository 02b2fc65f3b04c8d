"""Edges of measure.metrics.latency that the property tests leave open (found by mutation testing:
docs/testing.md): strict inequalities at the bound, the below-threshold direction, a curve exactly
one window long, the censoring flag in the flat dict."""

from __future__ import annotations

import pytest

from measure.metrics import latency as L


def test_as_dict_keeps_the_censoring_flag():
    assert L.Latency(3, True).as_dict("x") == {"x": 3, "x_censored": True}
    assert L.Latency(2, False).as_dict("x") == {"x": 2, "x_censored": False}


def test_a_window_below_one_is_refused_with_its_value():
    with pytest.raises(ValueError, match="w must be >= 1, got 0"):
        L.first_run([True], 0)


def test_below_threshold_is_strict_and_points_down():
    assert L.threshold_latency([0.5, 0.1, 0.05], 0.1, above=False) == (3, False)
    assert L.threshold_latency([0.5, 0.2, 0.3], 0.1, above=False) == (3, True)
    assert L.threshold_latency([0.5, 0.1, 0.2], 0.1) == (1, False)
    assert L.threshold_latency([0.1, 0.1, 0.2], 0.1) == (3, False)  # above is strict too


def test_a_curve_exactly_one_window_long_has_one_variance():
    assert L.rolling_variance([1.0, 3.0, 5.0], 3).tolist() == pytest.approx([8 / 3])
    assert L.stabilization_latency([0.0] * 5, eps=0.1, window=5) == (1, False)


def test_stabilization_needs_variance_strictly_below_eps():
    assert L.stabilization_latency([0.0, 2.0, 0.0, 2.0], eps=1.0, window=2) == (4, True)  # variance exactly 1
    assert L.stabilization_latency([0.0, 2.0, 0.0, 2.0], eps=1.0001, window=2) == (1, False)


def test_first_run_defaults_to_one_token_and_reads_any_truthy_values():
    assert L.first_run([False, True]) == (2, False)
    assert L.first_run([0.0, 0.5, 2.0], 2) == (2, False)  # non-zero values count as True
