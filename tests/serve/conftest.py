"""Fixtures for the ``measure serve`` tests: the app on a tiny random model, an SSE reader, and a
run folder with a real calibration (the committed baseline's ``metrics.json``)."""

from __future__ import annotations

import shutil
import time

import pytest

try:
    from starlette.testclient import TestClient
except ImportError as missing:  # pragma: no cover - a setup without the serve extras
    raise ImportError(f"tests/serve need the serve extras ({missing}): pip install -e '.[serve,serve-test]'") from None

from serve_helpers import BASELINE, CALIBRATION_ID, HELD_TOKENS

from measure.engine.events import TokenEvent
from measure.model.load import load_model
from measure.serve import app as app_module
from measure.serve.app import create_app
from measure.serve.live import LiveRun

HOLD_SECONDS = 60.0


@pytest.fixture(scope="session")
def tiny_loaded():
    return load_model("tiny:llama")


@pytest.fixture
def runs_root(tmp_path):
    """A runs folder with one finished run whose metrics.json carries a real calibration (at t6)."""
    root = tmp_path / "runs"
    (root / CALIBRATION_ID).mkdir(parents=True)
    for name in ("run.json", "metrics.json"):  # run.json makes it a run folder (measure.records.run_folder)
        shutil.copy(BASELINE / name, root / CALIBRATION_ID / name)
    return root


@pytest.fixture
def fast_streams(monkeypatch):
    """Short keepalives and findings intervals, so stream readers can check their deadlines."""
    monkeypatch.setattr(app_module, "KEEPALIVE_SECONDS", 0.5)
    monkeypatch.setattr(app_module, "FINDINGS_INTERVAL_SECONDS", 0.2)
    monkeypatch.setattr(app_module, "WATCH_POLL_SECONDS", 0.05)


@pytest.fixture
def make_client(tiny_loaded, runs_root, fast_streams):
    clients = []

    def make(**options) -> TestClient:
        options.setdefault("runs_root", runs_root)
        client = TestClient(create_app(tiny_loaded, **options))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def held_long_experiments(monkeypatch):
    """Experiments of ``HELD_TOKENS`` tokens stop after their first token until they are cancelled.

    Why: the cancellation tests need an experiment still running when the page cancels it or
    goes away. On a tiny model 256 tokens take well under a second, so "long" alone made them
    races (CI saw one finish before the closed stream was noticed). Held, the engine waits at
    a token event, checking for cancellation as it does at every event, so cancelling from
    the page, closing the stream or nobody subscribing ends it through the real path.
    """
    listener = LiveRun.listener

    def held_listener(self, experiment, start):
        listen = listener(self, experiment, start)
        if self.spec.max_new_tokens != HELD_TOKENS:
            return listen

        def hold(event) -> None:
            listen(event)
            if isinstance(event, TokenEvent):
                deadline = time.monotonic() + HOLD_SECONDS
                while time.monotonic() < deadline:
                    experiment.check()  # raises Cancelled once the experiment is cancelled
                    time.sleep(0.01)
                raise AssertionError(f"a held experiment was not cancelled within {HOLD_SECONDS:g} s")

        return hold

    monkeypatch.setattr(LiveRun, "listener", held_listener)
