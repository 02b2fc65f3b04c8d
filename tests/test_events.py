"""The engine's listener: every generated token announced once, in order, then every run."""

from __future__ import annotations

from measure.engine import Engine, EngineConfig
from measure.events import RunEvent, TokenEvent
from measure.model import load_model
from measure.testing import example_pair


def test_listener_hears_every_token_and_every_run():
    engine = Engine(load_model("tiny:llama"), EngineConfig(max_new_tokens=12, points=("4",), attention=False))
    events = []
    (result,) = engine.run_problems([example_pair()], listener=events.append)
    runs = [event.run for event in events if isinstance(event, RunEvent)]
    assert sorted((r.condition, r.point) for r in runs) == sorted((r.condition, r.point) for r in result.runs)
    for run in runs:
        tokens = [e for e in events if isinstance(e, TokenEvent)
                  and (e.problem_id, e.condition, e.point) == (run.problem_id, run.condition, run.point)]
        # Forked runs announce their tokens from t0 on; the shared ones are the ignore run's.
        assert [e.index for e in tokens] == list(range(run.t0, run.n_generated))
        assert [e.token_id for e in tokens] == run.generated_ids[run.t0:]
        assert "".join(e.piece for e in tokens) == "".join(run.generated_pieces[run.t0:])
    # Each run's tokens come before its RunEvent.
    last_token = {(e.condition, e.point): i for i, e in enumerate(events) if isinstance(e, TokenEvent)}
    for i, event in enumerate(events):
        if isinstance(event, RunEvent):
            assert last_token[(event.run.condition, event.run.point)] < i
    assert engine.listener is None


def test_no_listener_no_events():
    engine = Engine(load_model("tiny:llama"), EngineConfig(max_new_tokens=6, points=("2",), attention=False))
    with_listener, without = [], engine.run_problems([example_pair()])
    engine.run_problems([example_pair()], listener=with_listener.append)
    assert with_listener and without[0].runs
