"""The engine's listener: every generated token announced once, in order, then every run."""

from __future__ import annotations

from measure.engine.engine import Engine, EngineConfig
from measure.engine.events import RunEvent, TokenEvent
from measure.model.load import load_model
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


def test_live_kl_and_log_ratio_equal_the_final_arrays():
    """The references decode with the run, so each token event carries KL(run || P_ref) and r(t);
    they are the numbers the RunResult ends up with (float32, so equal to 1e-6)."""
    engine = Engine(load_model("tiny:llama"), EngineConfig(max_new_tokens=10, points=("3",), attention=False))
    events = []
    (result,) = engine.run_problems([example_pair()], listener=events.append)
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert tokens and all(e.kl is not None and e.log_ratio is not None for e in tokens)
    runs = {(r.condition, r.point): r for r in result.runs}
    for event in tokens:
        run = runs[(event.condition, event.point)]
        assert set(event.kl) == {"ignore", "oracle", "matched"}
        for ref, value in event.kl.items():
            assert abs(value - float(run.kl[ref][event.index])) <= 1e-6, (event.condition, event.point, ref)
        assert abs(event.log_ratio - float(run.log_ratio[event.index])) <= 1e-6, (event.condition, event.point)
