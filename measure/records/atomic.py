"""Writing a file so that it is either the old one or the complete new one, never a part.

Every output a user may already have (``run.json``, a pairs file from ``measure augment``, the
merged ``samples.jsonl``) goes through :func:`write_atomic`. Nothing here imports the rest of the
package, so any layer may use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: How a temporary file of :func:`write_atomic` ends; one left behind was cut short by a crash.
TEMPORARY_SUFFIX = ".tmp"


def write_atomic(path: str | Path, write, binary: bool = False) -> None:
    """Replace ``path`` with what ``write(handle)`` writes, or leave it as it was.

    The text (bytes when ``binary``) goes to a temporary file beside it (same folder, so the rename
    stays on one file system), is fsynced, and is renamed over ``path`` only once complete: a crash,
    a full disk or an exception in ``write`` leaves the old file whole (the temporary one is
    removed; one a kill -9 leaves is named ``.<name>.<pid>.tmp``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    try:
        with open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def sync_folder(folder: str | Path) -> None:
    """Make the renames in ``folder`` durable (a power cut after the rename keeps the new name)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_json(path: str | Path, obj, default=None) -> None:
    """``obj`` as indented JSON, atomically (see :func:`write_atomic`); NaN is an error, not output.
    ``default`` turns what JSON cannot hold into something it can (``str``), as in ``json.dumps``."""
    text = json.dumps(obj, indent=1, allow_nan=False, ensure_ascii=False, default=default) + "\n"
    write_atomic(path, lambda handle: handle.write(text))
