"""The controller's end of a session: merge every process's files into one report.

Reads ``<out>/workers/<run id>/`` (see :mod:`measure.pytest_plugin.worker_log`), orders the
records by the tests' collection order, and finds every collected measurement test that left no
record, with the reason: the process died while running it (a ``start`` without an ``end``), it
was skipped or failed before recording, or it never ran. Then it writes what ``measure run``
writes: ``samples.jsonl``, ``run.json`` and, through :func:`measure.report.summary.write_reports`,
``metrics.json`` and ``report.html``; the tests without a record go into the report's ``skipped``
list and its warnings, so they are visible in metrics.json and the HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from measure.pytest_plugin.worker_log import read_run
from measure.records import SAMPLES_FILE
from measure.records.record import Record
from measure.records.run_folder import write_run_info
from measure.records.store import write_records


@dataclass
class Merged:
    records: list[Record]
    missing: list[dict]  # {"nodeid", "key", "reason"} per measurement test that left no record
    expected: list[str]  # measurement test node ids, in collection order
    warnings: list[str]
    models: list[dict] = field(default_factory=list)
    workers: list[str] = field(default_factory=list)


def merge_run(run_dir: Path) -> Merged:
    record_files, event_files, warnings = read_run(run_dir)
    order: dict[str, int] = {}
    keys: dict[str, str | None] = {}
    started: dict[str, dict] = {}
    ended: dict[str, dict] = {}
    models, workers = [], []
    for events in event_files:
        for event in events:
            kind = event.get("event")
            if kind == "collected":
                for test in event.get("tests", []):
                    order.setdefault(test["nodeid"], len(order))
                    keys.setdefault(test["nodeid"], test.get("key"))
            elif kind == "start":
                started[event["nodeid"]] = event
            elif kind == "end":
                ended[event["nodeid"]] = event
            elif kind == "model":
                models.append({"worker": event.get("worker"), "torch_threads": event.get("torch_threads"),
                               **(event.get("info") or {})})
            if event.get("worker") and event["worker"] not in workers:
                workers.append(event["worker"])
    records = [record for found in record_files for record in found]
    late = len(order)
    records.sort(key=lambda r: (order.get(_nodeid(r), late), r.key))
    recorded = {_nodeid(record) for record in records}
    missing = []
    for nodeid in order:
        if nodeid in recorded:
            continue
        missing.append({"nodeid": nodeid, "key": keys.get(nodeid), "reason": _why(nodeid, started, ended)})
    if missing:
        warnings.append(f"{len(missing)} of {len(order)} measurement tests produced no record: "
                        + "; ".join(f"{m['nodeid']} ({m['reason']})" for m in missing[:20])
                        + (" ..." if len(missing) > 20 else ""))
    return Merged(records, missing, list(order), warnings, models, sorted(workers))


def _nodeid(record: Record) -> str | None:
    return None if record.test is None else record.test.nodeid


def _why(nodeid: str, started: dict, ended: dict) -> str:
    if nodeid in ended:
        end = ended[nodeid]
        message = (end.get("message") or "").strip()
        if end.get("outcome") == "skipped":
            return f"skipped: {message}" if message else "skipped"
        return f"{end.get('outcome')} before recording a measurement" + (f": {message}" if message else "")
    if nodeid in started:
        start = started[nodeid]
        return (f"no record: worker {start.get('worker')} (pid {start.get('pid')}) died while running it "
                "(crash, out of memory or kill)")
    return "never ran: the session was interrupted or lost its worker before this test"


def write_session_reports(out: Path, merged: Merged, info: dict) -> dict:
    """samples.jsonl, run.json, metrics.json and report.html; returns the metrics dict."""
    from measure.report.summary import write_reports  # keeps the plugin's import cheap (pandas, scipy)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_records(out / SAMPLES_FILE, merged.records)
    skipped = [{"test": m["nodeid"], "key": m["key"], "reason": m["reason"]} for m in merged.missing]
    info = {**info, "tests": {"expected": len(merged.expected),
                              "with_records": len(merged.expected) - len(merged.missing),
                              "without_record": merged.missing, "workers": merged.workers}}
    # run.json also keeps the skipped list and warnings, so `measure report DIR` re-renders them.
    saved = {**info, "skipped": skipped, "warnings": merged.warnings}
    write_run_info(out, saved)
    return write_reports(out, merged.records, info, skipped, warnings=merged.warnings)
