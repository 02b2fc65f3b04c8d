"""The records layer: what a measurement leaves on disk, between the metrics and the reports.

The data flow is data -> engine -> scoring -> metrics -> records -> report. This package holds
everything about the records themselves, so that ``measure run`` (:mod:`measure.run.runner`), the
pytest plugin (:mod:`measure.pytest_plugin`) and the reports (:mod:`measure.report`) all import
it downward and none of them imports another:

- this module: the names of the files in a run folder;
- :mod:`measure.records.run_folder`: what a run folder is, its ``run.json`` (written and read
  there only), its lock, and what ``measure run`` may write into;
- :mod:`measure.records.atomic`: the one atomic (temporary file, fsync, rename) write;
- :mod:`measure.records.samples`: the sample-record schema (one JSON object per problem x
  condition x point), its key, and how a problem's engine results become records;
- :mod:`measure.records.store`: the append-only JSONL store that survives crashes.

Nothing here imports torch or matplotlib.
"""

#: One sample record per line (:mod:`measure.records.samples`), appended as measured.
SAMPLES_FILE = "samples.jsonl"
#: Injection points the engine skipped (``measure run``), one object per line.
SKIPPED_FILE = "skipped.jsonl"
#: Provenance and settings of the run, written when it starts and again when it ends.
RUN_FILE = "run.json"
#: The machine-readable summary (:mod:`measure.report.summary`).
METRICS_FILE = "metrics.json"
#: The self-contained HTML report (:mod:`measure.report.html`).
REPORT_FILE = "report.html"
#: A pytest session's per-process records and events (:mod:`measure.pytest_plugin.worker_log`).
WORKERS_DIR = "workers"
#: What only this tool writes: a folder holding any of these is a run folder. Not metrics.json or
#: report.html alone: those names are common, and a folder of the user's holding one is refused.
RUN_MARKERS = (RUN_FILE, SAMPLES_FILE, WORKERS_DIR)
