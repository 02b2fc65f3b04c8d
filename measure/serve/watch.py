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
them at that moment (:mod:`measure.serve.watchers` shares one reader and one computation per
folder among the pages that watch it).

The folders offered are those below ``--runs-dir`` (two levels deep) that
:func:`measure.records.run_folder.is_run_folder` recognises, and those named with ``--watch``.
A folder below the root that is, or passes through, a symbolic link leading outside the root is
not offered. A folder whose ``run.json`` or ``metrics.json`` cannot be read, or has an
unexpected shape, is listed with its error; the others are listed as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

from measure.records import METRICS_FILE, RUN_FILE, SAMPLES_FILE
from measure.records.columnar import attach_arrays
from measure.records.record import Record, RecordError, validate_record
from measure.records.run_folder import RunFileError, is_run_folder, read_metrics_json, read_run_json
from measure.records.store import decode_record, latest_by_key
from measure.report.findings import findings_text
from measure.report.inputs import REPORT_COLUMNS, compact_record
from measure.report.summary import build_metrics, saved_provenance
from measure.serve.marks import CalibrationError, read_calibration

#: Folders below the runs root searched for run folders (reports/<run>, reports/baselines/<run>).
SEARCH_DEPTH = 2
CONTINUATION_CHARS = 300


class RunFolders:
    """The run folders a user may open: those under ``root`` and those named explicitly. The page
    names a folder by its id from :meth:`listing`; no other path is ever opened."""

    def __init__(self, root: str | Path | None = None, extra: tuple[str | Path, ...] = ()):
        self.root = Path(root).resolve() if root else None
        self.extra = tuple(Path(path).resolve() for path in extra)
        self._calibrations: dict[Path, tuple[tuple, str | None]] = {}

    def _children(self, folder: Path) -> list[Path]:
        """Sub-folders of ``folder`` that stay inside the root once links are followed."""
        try:
            entries = list(folder.iterdir())
        except OSError:  # removed meanwhile, or not readable: nothing to offer there
            return []
        children = []
        for child in entries:
            if child.name.startswith("."):
                continue
            try:
                resolved = child.resolve(strict=True)
            except (OSError, RuntimeError):  # a dangling link or a link loop
                continue
            if resolved.is_dir() and resolved.is_relative_to(self.root):
                children.append(child)
        return sorted(children)

    def _folders(self) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in self.extra:
            found[str(path)] = path
        if self.root is not None and self.root.is_dir():
            level = [self.root]
            for _ in range(SEARCH_DEPTH):
                level = [child for folder in level for child in self._children(folder)]
                for folder in level:
                    if is_run_folder(folder):
                        found.setdefault(str(folder.relative_to(self.root)), folder)
        return found

    def listing(self) -> list[dict]:
        out = []
        for folder_id, path in sorted(self._folders().items()):
            info = self._run_info(path)
            out.append({"id": folder_id, "path": str(path), **info})
        return out

    def folder(self, folder_id: str) -> Path | None:
        return self._folders().get(folder_id)

    def _run_info(self, path: Path) -> dict:
        """What the folder list shows: model, whether the run finished, whether it has a usable
        calibration, and the errors of files that cannot be read."""
        errors: list[str] = []
        try:
            run = read_run_json(path)
        except FileNotFoundError:
            run = {}
        except RunFileError as error:
            run = {}
            errors.append(str(error))
        model = run.get("model")
        name = model.get("name") if isinstance(model, dict) else None
        if model is not None and not (isinstance(model, dict) and isinstance(name, (str, type(None)))):
            errors.append(f"{path / RUN_FILE}: 'model' is not an object with a text 'name'")
            name = None
        calibration_error = self._calibration_error(path)
        if calibration_error:
            errors.append(calibration_error)
        samples = path / SAMPLES_FILE
        try:
            samples_bytes = samples.stat().st_size if samples.is_file() else 0
        except OSError:
            samples_bytes = 0
        return {"model": name, "finished": bool(run.get("finished")),
                "has_metrics": (path / METRICS_FILE).is_file() and calibration_error is None,
                "samples_bytes": samples_bytes, "errors": errors}

    def _calibration_error(self, path: Path) -> str | None:
        """Why ``metrics.json`` gives no calibration (None: it does, or there is none), read again
        only when the file changed."""
        metrics = path / METRICS_FILE
        try:
            stat = metrics.stat()
        except OSError:
            return None
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        known = self._calibrations.get(path)
        if known is None or known[0] != key:
            try:
                read_calibration(path, str(path))
                known = (key, None)
            except CalibrationError as error:
                known = (key, str(error))
            self._calibrations[path] = known
        return known[1]


class SamplesTail:
    """The records of a growing ``samples.jsonl``, read incrementally."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: list[Record] = []
        self.warnings: list[str] = []
        self._offset = 0
        self._pending = b""
        self._line = 0
        self._identity: tuple[int, int] | None = None

    def _reset(self) -> None:
        self.records, self.warnings = [], []
        self._offset, self._pending, self._line = 0, b"", 0

    def poll(self) -> tuple[list[Record], bool]:
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
                validate_record(record, f"{self.path}:{self._line}")  # a RecordError names the field
            except RecordError as error:
                self.warnings.append(f"{error}; left out")
                continue
            except (ValueError, RecursionError) as error:
                self.warnings.append(f"{self.path}:{self._line}: not a record, left out ({error})")
                continue
            new.append(record)
        # layout 2: arrays from the columnar files; only what the Findings read, held compactly
        new = [compact_record(r) for r in attach_arrays(self.path.parent, new, str(self.path), REPORT_COLUMNS)]
        self.records.extend(new)
        return new, reset

    @property
    def pending_bytes(self) -> int:
        """Bytes of a last line not yet terminated (being written, or torn by a crash)."""
        return len(self._pending)


def record_summary(record: Record) -> dict:
    """One row of the records table: identity, stop reason, continuation, two headline metrics."""
    continuation = record.texts.continuation if record.texts is not None else ""
    return {
        "key": record.key, "problem_id": record.problem_id, "condition": record.condition,
        "point": record.point, "variation_type": record.variation_type, "stop_reason": record.stop_reason,
        "continuation": continuation[:CONTINUATION_CHARS] + ("…" if len(continuation) > CONTINUATION_CHARS else ""),
        "adaptation_gap": record.metrics.get("adaptation_gap"), "outcome": record.metrics.get("outcome"),
    }


def saved_findings(folder: Path, records: list[Record]) -> dict | None:
    """The Findings the run wrote into ``metrics.json`` when they are of exactly these records:
    the run finished, ``metrics.json`` is not older than ``samples.jsonl`` and counts as many
    records. None otherwise (then they are computed)."""
    try:
        if not read_run_json(folder).get("finished"):
            return None
        if (folder / METRICS_FILE).stat().st_mtime_ns < (folder / SAMPLES_FILE).stat().st_mtime_ns:
            return None
        metrics = read_metrics_json(folder)
    except (OSError, RunFileError):
        return None
    findings, counts = metrics.get("findings"), metrics.get("counts")
    records_now = len(latest_by_key(records))
    if not (isinstance(findings, dict) and isinstance(counts, dict) and counts.get("records") == records_now):
        return None
    warnings = metrics.get("warnings")
    return {"findings": findings, "text": findings_text(findings), "counts": counts, "records": records_now,
            "warnings": warnings if isinstance(warnings, list) else [], "source": METRICS_FILE}


def folder_findings(folder: Path, records: list[Record], warnings: list[str]) -> dict:
    """The Findings of the records so far, as ``measure report`` would compute them now; those
    of the run's own ``metrics.json`` when it has them for exactly these records."""
    saved = saved_findings(folder, records)
    if saved is not None:
        return saved
    provenance, skipped, notes = saved_provenance(folder)
    settings = provenance.get("settings") or {}
    options = {name: settings[name] for name in ("alpha", "seed") if isinstance(settings.get(name), (int, float))}
    metrics = build_metrics(records, provenance, skipped, warnings=[*warnings, *notes], **options)
    findings = metrics.get("findings") or {}
    return {"findings": findings, "text": findings_text(findings), "counts": metrics.get("counts"),
            "records": len(latest_by_key(records)), "warnings": metrics.get("warnings", []), "source": "records"}
