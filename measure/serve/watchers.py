"""One reader per watched run folder, whatever the number of pages watching it.

A page that watches a run folder subscribes to the folder's :class:`FolderWatch`. The first
subscriber starts it: one asyncio task that every ``POLL_SECONDS`` reads only the bytes appended
to ``samples.jsonl`` (:class:`~measure.serve.watch.SamplesTail`), turns the new records into
server-sent event messages once, and keeps them for every subscriber, present and future. The
Findings of the records so far are recomputed only when records arrived, at most once every
``FINDINGS_INTERVAL_SECONDS``, for all subscribers together. The last subscriber leaving stops
the reader ``LINGER_SECONDS`` later (a page that reloads finds it still warm).

File reads and the Findings run in two threads of their own, never in the worker pool that
serves the page's files (Starlette's ``anyio.to_thread``): a slow Findings computation delays
the next Findings, not ``GET /``. A computation that started runs to its end (a thread cannot be
stopped); its result is dropped when the file was replaced meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from measure.records import SAMPLES_FILE
from measure.records.run_folder import RunFileError, read_run_json
from measure.serve.watch import SamplesTail, folder_findings, record_summary

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
FINDINGS_INTERVAL_SECONDS = 3.0
LINGER_SECONDS = 2.0
RECORDS_PER_MESSAGE = 200


def sse(index: int | None, message: dict) -> bytes:
    """One server-sent event. JSON keeps every text a string (the page never parses it as HTML);
    ASCII escapes make any text encodable, a lone surrogate included."""
    head = f"id: {index}\n" if index is not None else ""
    return f"{head}data: {json.dumps(message, ensure_ascii=True, allow_nan=False)}\n\n".encode("ascii")


def run_finished(folder: Path) -> bool:
    """Whether ``run.json`` says the run finished (a missing or unreadable file: not known to)."""
    try:
        return bool(read_run_json(folder).get("finished"))
    except (FileNotFoundError, RunFileError):
        return False


class FolderWatch:
    """The messages of one run folder, shared by its subscribers (all in the event loop's thread).

    ``chunks`` holds the records messages since the file was last (re)read from its start, which
    ``generation`` counts; ``status`` and ``findings`` are the latest of each; ``version`` grows
    at every change, which wakes the subscribers.
    """

    def __init__(self, folder: Path, hub: WatchHub):
        self.folder = folder
        self.hub = hub
        self.tail = SamplesTail(folder / SAMPLES_FILE)
        self.generation = 0
        self.chunks: list[bytes] = []
        self.status: bytes | None = None
        self.findings: bytes | None = None
        self.findings_computed = 0
        self.version = 0
        self.subscribers = 0
        self.left_at = time.monotonic()
        self.task: asyncio.Task | None = None
        self._changed = asyncio.Event()

    # -- subscribers ----------------------------------------------------------------------------
    async def wait(self, seen_version: int, timeout: float) -> None:
        """Return when ``version`` differs from ``seen_version``, or after ``timeout`` seconds."""
        if self.version != seen_version:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def _notify(self) -> None:
        self.version += 1
        self._changed.set()
        self._changed = asyncio.Event()

    # -- the reader -------------------------------------------------------------------------------
    def _read(self) -> tuple[bool, list[bytes], dict]:
        """In the read thread: the new records as messages, and the folder's status."""
        new, reset = self.tail.poll()
        total = len(self.tail.records)
        chunks = [sse(None, {"type": "records", "items": [record_summary(r) for r in new[start:start + RECORDS_PER_MESSAGE]],
                             "total": total})
                  for start in range(0, len(new), RECORDS_PER_MESSAGE)]
        status = {"type": "status", "records": total, "pending_bytes": self.tail.pending_bytes,
                  "finished": run_finished(self.folder), "warnings": self.tail.warnings[-5:]}
        return reset, chunks, status

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        dirty, last_findings, last_status = False, -math.inf, None
        computing: asyncio.Future | None = None
        while self.subscribers > 0 or time.monotonic() - self.left_at < LINGER_SECONDS:
            changed = False
            try:
                reset, chunks, status = await loop.run_in_executor(self.hub.read_pool, self._read)
            except Exception as error:  # e.g. the folder was removed: say so, keep watching
                if not isinstance(error, OSError):
                    log.exception("reading %s failed", self.tail.path)
                reason = error.strerror if isinstance(error, OSError) and error.strerror else f"{type(error).__name__}: {error}"
                reset, chunks = False, []
                status = {"type": "status", "records": len(self.tail.records), "pending_bytes": 0, "finished": False,
                          "warnings": [f"{self.tail.path}: cannot be read ({reason})"]}
            if reset:
                self.generation += 1
                self.chunks, self.findings, dirty, changed = [], None, True, True
            if chunks:
                self.chunks.extend(chunks)
                dirty, changed = True, True
            if status != last_status:
                self.status, last_status, changed = sse(None, status), status, True
            if (dirty and computing is None and self.tail.records and self.subscribers > 0
                    and time.monotonic() - last_findings >= FINDINGS_INTERVAL_SECONDS):
                dirty, last_findings = False, time.monotonic()
                computing = loop.run_in_executor(self.hub.findings_pool, folder_findings, self.folder,
                                                 list(self.tail.records), list(self.tail.warnings))
                computing.add_done_callback(self._findings_done(self.generation))
            if computing is not None and computing.done():
                computing = None
            if changed:
                self._notify()
            await asyncio.sleep(POLL_SECONDS)

    def _findings_done(self, generation: int):
        def done(future: asyncio.Future) -> None:
            if future.cancelled() or generation != self.generation:
                return  # the file was replaced while they were computed: they describe old records
            self.findings_computed += 1
            error = future.exception()
            if error is None:
                try:
                    self.findings = sse(None, {"type": "findings", **future.result()})
                except ValueError as unencodable:  # e.g. a NaN the metrics let through
                    error = unencodable
            if error is not None:  # a record the metrics cannot read: say so, keep watching
                self.findings = sse(None, {"type": "findings_error", "message": f"{type(error).__name__}: {error}"})
            self._notify()

        return done


class WatchHub:
    """The watched folders of one app, and the two threads their readers use."""

    def __init__(self):
        self.watches: dict[Path, FolderWatch] = {}
        self.read_pool = ThreadPoolExecutor(1, thread_name_prefix="measure-serve-read")
        self.findings_pool = ThreadPoolExecutor(1, thread_name_prefix="measure-serve-findings")

    def subscribe(self, folder: Path) -> FolderWatch:
        watch = self.watches.get(folder)
        if watch is None:
            watch = self.watches[folder] = FolderWatch(folder, self)
        watch.subscribers += 1
        if watch.task is None or watch.task.done():
            watch.task = asyncio.get_running_loop().create_task(self._run(watch))
        return watch

    def unsubscribe(self, watch: FolderWatch) -> None:
        watch.subscribers -= 1
        watch.left_at = time.monotonic()

    async def _run(self, watch: FolderWatch) -> None:
        try:
            await watch.run()
        except Exception:  # the reader must not take the server down; a new subscriber restarts it
            log.exception("watching %s failed", watch.folder)
        finally:
            if watch.subscribers <= 0 and self.watches.get(watch.folder) is watch:
                del self.watches[watch.folder]

    def readers(self) -> int:
        """Readers running now (one per watched folder)."""
        return sum(1 for watch in self.watches.values() if watch.task is not None and not watch.task.done())

    def close(self) -> None:
        for watch in self.watches.values():
            if watch.task is not None:
                watch.task.cancel()
        self.read_pool.shutdown(wait=False, cancel_futures=True)
        self.findings_pool.shutdown(wait=False, cancel_futures=True)
