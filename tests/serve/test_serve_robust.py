"""No input answers 500, and every stream ends and gives its subscription back.

A property test sends generated JSON bodies, headers (``Last-Event-ID``, ``Content-Type``,
``Origin``) and query strings to every route; the inputs that broke the server before are
explicit cases below it.
"""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve_helpers import BASE_URL, CALIBRATION_ID, HELD_TOKENS, first_line, read_events
from starlette.requests import ClientDisconnect

from measure.serve.app import EventStream
from measure.serve.experiments import Experiment
from measure.serve.watchers import sse
from measure.testing import QUESTION_A, QUESTION_B

CUSTOM = {"question_a": QUESTION_A, "question_b": QUESTION_B, "max_new_tokens": 6, "points": "2",
          "conditions": ["ignore", "oracle", "injection"]}
HELD = {**CUSTOM, "max_new_tokens": HELD_TOKENS, "points": "0.5"}
FIELDS = ("question_a", "question_b", "context", "update", "kind", "update_form", "points", "conditions",
          "max_new_tokens", "dataset", "pair_id", "calibration")
SURROGATE_BODY = b'{"question_a": "\\ud800 lone", "question_b": "fine"}'


def assert_answered(response) -> None:
    """Below 500, and a JSON error is one line naming its field (null only where no field is meant)."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400 and response.headers.get("content-type", "").startswith("application/json"):
        body = response.json()
        assert isinstance(body["error"], str) and body["error"] and "\n" not in body["error"], body
        assert "field" in body
        if response.status_code == 422:
            assert isinstance(body["field"], str) and body["field"], body


# -- generated input ----------------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                             max_size=4), max_leaves=12)
bodies = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), values, max_size=6) | values
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=20)
ROUTES = [("GET", "/api/info"), ("GET", "/api/datasets"), ("GET", "/api/pairs"), ("GET", "/api/runs"),
          ("GET", "/api/calibration"), ("GET", "/api/experiments/{id}"), ("POST", "/api/update"),
          ("POST", "/api/experiments"), ("POST", "/api/experiments/{id}/cancel"), ("GET", "/")]
STREAMS = ["/api/experiments/{id}/events", "/api/runs/events"]


def send_json(body) -> bytes:
    return json.dumps(body).encode()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), experiment_id=st.text(max_size=12) | st.just("x1"),
       query=st.dictionaries(st.sampled_from(["id", "dataset", "token", "x"]), st.text(max_size=20), max_size=3),
       body=bodies | st.binary(max_size=60).map(lambda raw: ("raw", raw)),
       content_type=st.sampled_from(["application/json", "text/plain", "application/json; charset=latin-1"]) | header_text,
       origin=st.none() | st.just(BASE_URL) | header_text)
def test_no_route_answers_500(client, route, experiment_id, query, body, content_type, origin):
    method, path = route
    query = {name: value for name, value in query.items() if name != "token"}  # the header carries the right one
    content = body[1] if isinstance(body, tuple) else send_json(body)
    headers = {"Content-Type": content_type.encode("latin-1")}
    if origin is not None:
        headers["Origin"] = origin.encode("latin-1")
    url = path.replace("{id}", quote(experiment_id, safe=""))
    response = client.request(method, url, params=query, content=content if method == "POST" else None, headers=headers)
    assert_answered(response)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(STREAMS), last_event_id=header_text, folder_id=st.text(max_size=12) | st.just(CALIBRATION_ID),
       experiment_id=st.text(max_size=6) | st.just("x1"))
def test_no_stream_answers_500(client, path, last_event_id, folder_id, experiment_id):
    url = path.replace("{id}", quote(experiment_id, safe=""))
    headers = {"Last-Event-ID": last_event_id.encode("latin-1")}
    with client.stream("GET", url, params={"id": folder_id}, headers=headers) as response:
        if response.status_code != 200:
            response.read()
        assert_answered(response)


# -- the inputs that broke it before ------------------------------------------------------------
@pytest.mark.parametrize(("path", "content", "field", "words"), [
    ("/api/experiments", json.dumps({**CUSTOM, "max_new_tokens": "²"}).encode(), "max_new_tokens", "whole number"),
    ("/api/experiments", b"[" * 40_000, "body", "too deeply"),
    ("/api/update", b"[" * 30_000 + b"]" * 30_000, "body", "too deeply"),
    ("/api/experiments", json.dumps({**CUSTOM, "points": [[[[[[[[[["4"]]]]]]]]]]}).encode(), "points", "deep"),
    ("/api/update", SURROGATE_BODY, "question_a", "not valid Unicode"),
    ("/api/experiments", SURROGATE_BODY, "question_a", "not valid Unicode"),
    ("/api/experiments", json.dumps({**CUSTOM, "conditions": ["injection", "\ud800"]}).encode(), "conditions",
     "not valid Unicode"),
    ("/api/experiments", json.dumps({**CUSTOM, "\udc00": 1}).encode(), "\\udc00", "not valid Unicode"),
])
def test_inputs_that_answered_500_are_422_naming_the_field(client, path, content, field, words):
    response = client.post(path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and words in response.json()["error"]


def test_an_odd_content_length_is_not_a_length(client):
    response = client.post("/api/update", content=json.dumps(CUSTOM).encode(),
                           headers={"Content-Type": "application/json", "Content-Length": b"\xb2"})
    assert_answered(response)


def test_a_last_event_id_that_is_no_number_starts_from_the_first_message(client):
    answer = client.post("/api/experiments", json=CUSTOM).json()
    messages = read_events(client, answer["events"])  # the experiment runs to its end
    for odd in (b"\xb2", b"-1", b"1e3", b"9" * 40, b""):
        again = []
        with client.stream("GET", answer["events"], headers={"Last-Event-ID": odd}) as response:
            assert response.status_code == 200
            again = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        assert again == messages, odd


# -- streams end and give their subscription back -----------------------------------------------
def test_a_finished_experiment_sends_what_remains_and_closes(client):
    answer = client.post("/api/experiments", json=CUSTOM).json()
    messages = read_events(client, answer["events"])
    for last, expected in ((len(messages) - 3, messages[-2:]), (len(messages) - 1, []), (len(messages) + 50, []),
                           (10**8, [])):
        began = time.monotonic()
        with client.stream("GET", answer["events"], headers={"Last-Event-ID": str(last)}) as response:
            rest = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        assert rest == expected and time.monotonic() - began < 5, last
    assert client.get(f"/api/experiments/{answer['id']}").json()["subscribers"] == 0


def test_subscribers_are_given_back_after_abrupt_disconnects(client, held_long_experiments):
    answer = client.post("/api/experiments", json=HELD).json()
    # Others open and drop the stream mid-way, at every point of it, while one stays subscribed.
    with client.stream("GET", answer["events"]) as kept:
        lines = kept.iter_lines()
        first_line(lines, lambda line: line.startswith("data: ") and '"type": "token"' in line)
        for stop_after in (0, 1, 2, 5):
            with client.stream("GET", answer["events"]) as dropped:
                for count, _ in enumerate(dropped.iter_lines()):
                    if count >= stop_after:
                        break
        state = client.get(f"/api/experiments/{answer['id']}").json()
        assert state["subscribers"] == 1 and state["state"] == "running", state
    deadline = time.monotonic() + 10
    while (state := client.get(f"/api/experiments/{answer['id']}").json())["state"] == "running":
        assert time.monotonic() < deadline, state
        time.sleep(0.05)
    assert state["subscribers"] == 0 and state["state"] == "cancelled", state


def test_a_failed_send_closes_the_stream_and_gives_the_subscription_back():
    """A send that fails (the reason Starlette stops streaming) must still run the generator's
    ``finally``: before, an encoding error left the subscriber counted forever."""
    experiment = Experiment(lambda e: None)
    experiment.publish({"type": "queued", "position": 0})

    async def events():
        experiment.subscribe()
        try:
            while True:
                yield sse(0, {"type": "token", "piece": "\ud800"})  # encodable: ASCII escapes
                await anyio.sleep(0.01)
        finally:
            experiment.unsubscribe()

    sent = []

    async def send(message):
        if message["type"] == "http.response.body" and len(sent) >= 2:
            raise OSError("the client went away")
        sent.append(message)

    async def receive():
        await anyio.sleep(60)
        return {"type": "http.disconnect"}

    async def main():
        response = EventStream(events())
        with pytest.raises(ClientDisconnect):  # what Starlette makes of the failed send
            await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)

    anyio.run(main)
    assert experiment.subscribers == 0 and experiment.state == "cancelled"
    assert b"\\ud800" in sent[1]["body"]


def test_sse_never_fails_to_encode():
    assert sse(3, {"text": "\ud800 and é"}) == b'id: 3\ndata: {"text": "\\ud800 and \\u00e9"}\n\n'
