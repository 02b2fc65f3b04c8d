"""Constants and helpers that the ``measure serve`` test modules import (a module of its own: a
name imported from ``conftest`` depends on which directory's conftest pytest loaded last)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / "reports" / "baselines" / "smollm2"
CALIBRATION_ID = "calibrated"
HELD_TOKENS = 256  # experiments asking for this many tokens are held by the `held_long_experiments` fixture
TOKEN = "test-launch-token-0123456789"
BASE_URL = "http://127.0.0.1:8765"


def read_events(client, url: str, until=lambda message, seen: message["type"] in ("done", "cancelled", "error"),
                timeout: float = 120.0) -> list[dict]:
    """Messages of an SSE stream up to and including the first for which ``until`` holds.

    Fails when ``timeout`` passes first (keepalives let it check while the stream is quiet).
    """
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    with client.stream("GET", url) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                pytest.fail(f"{url}: no end within {timeout} s; last messages {seen[-3:]}")
            if not line.startswith("data: "):
                continue
            message = json.loads(line[len("data: "):])
            seen.append(message)
            if until(message, seen):
                return seen
    pytest.fail(f"{url}: stream ended without the awaited message; last messages {seen[-3:]}")


def first_line(lines, wanted, timeout: float = 60.0) -> str:
    """The first line of an SSE stream's ``lines`` for which ``wanted`` holds. Fails when
    ``timeout`` passes first (the stream's keepalives let it check while nothing else comes) or the
    stream ends: a watcher that never gets its message fails the test instead of hanging it."""
    deadline = time.monotonic() + timeout
    for line in lines:
        if wanted(line):
            return line
        if time.monotonic() > deadline:
            pytest.fail(f"no awaited line within {timeout} s; the last was {line[:200]!r}")
    pytest.fail("the stream ended without the awaited line")
