"""Writing a file so that it is either the old one or the complete new one, never a part.

Every output a user may already have (``run.json``, a pairs file from ``measure augment``, the
merged ``samples.jsonl``) goes through :func:`write_atomic`. Nothing here imports the rest of the
package, so any layer may use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_atomic(path: str | Path, write) -> None:
    """Replace ``path`` with what ``write(handle)`` writes, or leave it as it was.

    The text goes to a temporary file beside it (same folder, so the rename stays on one file
    system), is fsynced, and is renamed over ``path`` only once complete: a crash, a full disk or
    an exception in ``write`` leaves the old file whole (the temporary one is removed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | Path, obj, default=None) -> None:
    """``obj`` as indented JSON, atomically (see :func:`write_atomic`); NaN is an error, not output.
    ``default`` turns what JSON cannot hold into something it can (``str``), as in ``json.dumps``."""
    text = json.dumps(obj, indent=1, allow_nan=False, ensure_ascii=False, default=default) + "\n"
    write_atomic(path, lambda handle: handle.write(text))
