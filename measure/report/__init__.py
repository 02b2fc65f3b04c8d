"""The JSON and HTML reports built from a run's records (:mod:`measure.records`), and ``measure compare``."""
