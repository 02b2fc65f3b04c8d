"""Watch a ``measure run`` folder, also one still being written: its records as they arrive and
the Findings computed from the records so far.

``samples.jsonl`` grows a line at a time (:mod:`measure.records.store`). :class:`SamplesTail`
reads only what was appended since the last look and keeps an unterminated last line for later:
while a run writes, the last line may be half written, and it is neither an error nor a record
yet. A complete line that is not a record is reported as a warning naming file and line and left
out. A file that shrank or was replaced (``--resume`` repairs a torn line by rewriting the file)
is read again from the start.

Findings come from :func:`measure.report.summary.build_metrics` over the records read so far
(the run's own alpha and seed from ``run.json``), exactly as ``measure report`` would compute
them at that moment; they are recomputed only when records arrived, at most every few seconds
(a few hundred records take about 2 s).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from measure.records import METRICS_FILE, RUN_FILE, SAMPLES_FILE
from measure.records.columnar import attach_arrays
from measure.records.store import decode_record, latest_by_key
from measure.report.findings import findings_text
from measure.report.summary import build_metrics, saved_provenance

#: Folders below the runs root searched for run folders (reports/<run>, reports/baselines/<run>).
SEARCH_DEPTH = 2
CONTINUATION_CHARS = 300
RUN_MARKERS = (SAMPLES_FILE, RUN_FILE, METRICS_FILE)


def _is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in RUN_MARKERS)


class RunFolders:
    """The run folders a user may open: those under ``root`` and those named explicitly. The page
    names a folder by its id from :meth:`listing`; no other path is ever opened."""

    def __init__(self, root: str | Path | None = None, extra: tuple[str | Path, ...] = ()):
        self.root = Path(root).resolve() if root else None
        self.extra = tuple(Path(path).resolve() for path in extra)

    def _folders(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in self.extra:
            found[str(path)] = path
        if self.root is not None and self.root.is_dir():
            level = [self.root]
            for _ in range(SEARCH_DEPTH):
                level = sorted(child for folder in level for child in folder.iterdir()
                               if child.is_dir() and not child.name.startswith("."))
                for folder in level:
                    if _is_run_folder(folder):
                        found.setdefault(str(folder.relative_to(self.root)), folder)
        return found

    def listing(self) -> list[dict]:
        out = []
        for folder_id, path in sorted(self._folders().items()):
            info = _run_info(path)
            out.append({"id": folder_id, "path": str(path), **info})
        return out

    def folder(self, folder_id: str) -> Path | None:
        return self._folders().get(folder_id)


def _run_info(path: Path) -> dict:
    """What the folder list shows: model, whether the run finished, whether it has a calibration."""
    model, finished = None, None
    try:
        run = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
        model = ((run.get("model") or {}).get("name")) if isinstance(run, dict) else None
        finished = bool(isinstance(run, dict) and run.get("finished"))
    except (OSError, ValueError):
        pass
    samples = path / SAMPLES_FILE
    return {"model": model, "finished": finished, "has_metrics": (path / METRICS_FILE).is_file(),
            "samples_bytes": samples.stat().st_size if samples.is_file() else 0}


class SamplesTail:
    """The records of a growing ``samples.jsonl``, read incrementally."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: list[dict] = []
        self.warnings: list[str] = []
        self._offset = 0
        self._pending = b""
        self._line = 0
        self._identity: tuple[int, int] | None = None

    def _reset(self) -> None:
        self.records, self.warnings = [], []
        self._offset, self._pending, self._line = 0, b"", 0

    def poll(self) -> tuple[list[dict], bool]:
        """(records appended since the last poll, whether the file was replaced and read anew)."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return [], False
        identity = (stat.st_dev, stat.st_ino)
        reset = self._identity is not None and (identity != self._identity or stat.st_size < self._offset)
        if reset:
            self._reset()
        self._identity = identity
        if stat.st_size == self._offset:
            return [], reset
        with open(self.path, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read(stat.st_size - self._offset)
        self._offset += len(chunk)
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()  # "" after a complete line; else a line still being written
        new = []
        for raw in lines:
            self._line += 1
            if not raw.strip():
                continue
            try:
                record = decode_record(raw)
            except ValueError as error:
                self.warnings.append(f"{self.path}:{self._line}: not a record, left out ({error})")
                continue
            new.append(record)
        new = attach_arrays(self.path.parent, new, str(self.path))  # layout 2: arrays from the columnar files
        self.records.extend(new)
        return new, reset

    @property
    def pending_bytes(self) -> int:
        """Bytes of a last line not yet terminated (being written, or torn by a crash)."""
        return len(self._pending)


def record_summary(record: dict) -> dict:
    """One row of the records table: identity, stop reason, continuation, two headline metrics."""
    metrics = record.get("metrics") or {}
    texts = record.get("texts") or {}
    continuation = str(texts.get("continuation") or "")
    return {
        "key": str(record.get("key")), "problem_id": record.get("problem_id"), "condition": record.get("condition"),
        "point": record.get("point"), "variation_type": record.get("variation_type"),
        "stop_reason": record.get("stop_reason"),
        "continuation": continuation[:CONTINUATION_CHARS] + ("…" if len(continuation) > CONTINUATION_CHARS else ""),
        "adaptation_gap": metrics.get("adaptation_gap"), "outcome": metrics.get("outcome"),
    }


def folder_findings(folder: Path, records: list[dict], warnings: list[str]) -> dict:
    """The Findings of the records so far, as ``measure report`` would compute them now."""
    provenance, skipped, notes = saved_provenance(folder)
    settings = provenance.get("settings") or {}
    options = {name: settings[name] for name in ("alpha", "seed") if isinstance(settings.get(name), (int, float))}
    metrics = build_metrics(records, provenance, skipped, warnings=[*warnings, *notes], **options)
    findings = metrics.get("findings") or {}
    return {"findings": findings, "text": findings_text(findings), "counts": metrics.get("counts"),
            "records": len(latest_by_key(records)), "warnings": metrics.get("warnings", [])}
