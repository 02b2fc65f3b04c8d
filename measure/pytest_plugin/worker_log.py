"""What each pytest process writes while it runs: its records and its test events.

Every process (an xdist worker, or the single process of a serial run) appends to its own files
under ``<out>/workers/<run id>/``, one JSON object per line, flushed and fsynced per line:

- ``<worker>-<pid>.jsonl``: the records, in the sample-record schema plus ``invariants`` and
  ``test``;
- ``<worker>-<pid>.events.jsonl``: ``collected`` (the measurement tests this process collected,
  in order), ``model`` (what was loaded), ``start`` and ``end`` of each measurement test
  (outcome, message, records written). An injection point the engine skipped has no event of its
  own: its test ends with outcome ``skipped`` and the engine's reason as the message.

A worker killed mid-test leaves a ``start`` without an ``end``: the controller reports that test
as having produced no record. Nothing here imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path

from measure.records.record import Record
from measure.records.store import RecordStore, read_store

EVENTS_SUFFIX = ".events.jsonl"


class WorkerLog:
    def __init__(self, run_dir: Path, worker_id: str):
        self.run_dir = Path(run_dir)
        self.worker_id = worker_id
        stem = f"{worker_id}-{os.getpid()}"
        self.records = RecordStore(self.run_dir / f"{stem}.jsonl")
        self.events = RecordStore(self.run_dir / f"{stem}{EVENTS_SUFFIX}")

    def _ready(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def record(self, record: dict) -> None:
        self._ready()
        self.records.append(record)

    def event(self, event: str, nodeid: str = "", **data) -> None:
        self._ready()
        # "key" makes an event line readable by measure.records.store.read_store.
        self.events.append({"key": nodeid or event, "event": event, "nodeid": nodeid,
                            "worker": self.worker_id, "pid": os.getpid(), **data})


def read_run(run_dir: Path) -> tuple[list[list[Record]], list[list[dict]], list[str]]:
    """Every process's records (typed: a RecordError names file, line and field) and events (file
    by file, sorted by name), and read warnings."""
    run_dir = Path(run_dir)
    records, events, warnings = [], [], []
    if not run_dir.is_dir():
        return records, events, warnings
    for path in sorted(run_dir.iterdir()):
        if path.name.endswith(EVENTS_SUFFIX):
            found, notes = read_store(path)
            events.append(found)
            warnings.extend(notes)
        elif path.suffix == ".jsonl":
            found, notes = read_store(path, typed=True)
            records.append(found)
            warnings.extend(notes)
    return records, events, warnings
