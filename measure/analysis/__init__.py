"""Statistics across a run's records: calibration of events against control runs, paired tests
and confidence intervals, calibrated latencies per record, and outcome summaries.

- :mod:`measure.analysis.calibration`: conformal thresholds on control runs, cross-fitted;
- :mod:`measure.analysis.calibrated`: every record's calibrated event latencies and the lead event
  (:func:`measure.analysis.calibrated.lead_latencies`);
- :mod:`measure.analysis.survival`: cumulative incidence, restricted mean time to the event (lifelines);
- :mod:`measure.analysis.lead`: the lead event's survival summaries and exact McNemar tests per point;
- :mod:`measure.analysis.stats`: intervals, paired tests, multiplicity, survival summaries;
- :mod:`measure.analysis.outcomes`: how runs ended (adapted, stale, other, unfinished).

It reads records and returns plain numbers; rendering them is :mod:`measure.report`'s job.
"""
