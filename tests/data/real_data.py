"""Where the tests find the real datasets: $MEASURE_DATA_DIR, else ../shared/data beside the
repository (the same rule as the repository's conftest.py, which fails their skips under CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

REAL_DATA = Path(os.environ.get("MEASURE_DATA_DIR") or Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
