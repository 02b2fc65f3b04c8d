"""The ``measure serve`` API through Starlette's TestClient on a tiny random model: the page,
validation, an experiment's stream, queueing, cancellation, marks and escaping."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from serve_helpers import CALIBRATION_ID, HELD_TOKENS, read_events

from measure.analysis.calibration import event_latency
from measure.metrics.attribution import LABELS
from measure.serve.requests import MAX_BODY_BYTES, MAX_QUESTION_CHARS, MAX_UPDATE_CHARS
from measure.testing import QUESTION_A, QUESTION_B

PAYLOAD = '<script>alert("x")</script><img src=x onerror=alert(1)>'
CUSTOM = {"question_a": QUESTION_A, "question_b": QUESTION_B, "max_new_tokens": 10, "points": "4",
          "conditions": ["ignore", "oracle", "injection", "flush"]}


def submit(client, body: dict, status: int = 202) -> dict:
    response = client.post("/api/experiments", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def wait_for_state(client, experiment_id: str, states, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/api/experiments/{experiment_id}").json()
        if state["state"] in states:
            return state
        time.sleep(0.05)
    pytest.fail(f"experiment {experiment_id} not in {states} within {timeout} s: {state}")


# -- the page ---------------------------------------------------------------------------------
def test_page_is_self_contained_and_static(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    urls = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert urls and all(url.startswith("/static/") or url == "data:," for url in urls), urls  # no CDN
    # The page is a file, not a template: a query string never reaches it.
    assert client.get("/", params={"q": PAYLOAD}).text == page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "textContent" in script.text
    # Data is written with textContent only: no HTML parsing of anything.
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script.text, sink
    assert client.get("/static/app.css").status_code == 200


def test_info_lists_limits_and_conditions(client):
    info = client.get("/api/info").json()
    assert info["model"] == "tiny:llama"
    assert info["conditions"][:2] == ["ignore", "oracle"] and "injection" in info["conditions"]
    # Strategies are offered but not checked at first (opt-in, as in measure run).
    assert "gradual" in info["conditions"] and "gradual" not in info["default_conditions"]
    assert set(info["default_conditions"]) < set(info["conditions"]) and "injection" in info["default_conditions"]
    assert info["limits"]["question_chars"] == MAX_QUESTION_CHARS
    assert info["queue"] == {"running": None, "waiting": [], "max_waiting": 2}


def test_builtin_pairs_and_unknown_dataset(client):
    pairs = client.get("/api/pairs", params={"dataset": "builtin-easy"}).json()["pairs"]
    assert len(pairs) == 54 and {"id", "question_a", "question_b", "erratum"} <= pairs[0].keys()
    names = {entry["name"]: entry for entry in client.get("/api/datasets").json()}
    assert names["builtin"]["available"] and not names["mawps"]["available"]  # no --data-dir here
    missing = client.get("/api/pairs", params={"dataset": "nope"})
    assert missing.status_code == 404 and "unknown dataset 'nope'" in missing.json()["error"]


def test_generated_update_names_the_change(client):
    body = {"question_a": QUESTION_A, "question_b": QUESTION_B}
    erratum = client.post("/api/update", json=body).json()["update"]
    assert erratum.startswith("Correction: 7") and "not 5" in erratum
    restated = client.post("/api/update", json={**body, "update_form": "restatement"}).json()["update"]
    assert restated == f"Update: the problem is now: {QUESTION_B}"


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "field", "words"), [
    ({}, "question_a", "is required"),
    ({"question_a": "x" * (MAX_QUESTION_CHARS + 1)}, "question_a", f"at most {MAX_QUESTION_CHARS}"),
    ({**CUSTOM, "update": "u" * (MAX_UPDATE_CHARS + 1)}, "update", f"at most {MAX_UPDATE_CHARS}"),
    ({**CUSTOM, "question_b": 5}, "question_b", "must be text"),
    ({**CUSTOM, "kind": "poetry"}, "kind", "'poetry' is not one of math, qa"),
    ({**CUSTOM, "points": "soon"}, "points", "neither a token count"),
    ({**CUSTOM, "points": "40"}, "points", "at or beyond the generation length"),
    ({**CUSTOM, "points": "1,2,3,4,5"}, "points", "at most 4"),
    ({**CUSTOM, "max_new_tokens": 100000}, "max_new_tokens", "outside 2..256"),
    ({**CUSTOM, "max_new_tokens": "many"}, "max_new_tokens", "whole number"),
    ({**CUSTOM, "conditions": ["injection", PAYLOAD]}, "conditions", "unknown condition"),
    ({**CUSTOM, "update_form": "poem"}, "update_form", "is not one of erratum, restatement"),
    ({"dataset": "builtin-easy", "pair_id": "no_such_pair"}, "pair_id", "no pair 'no_such_pair'"),
    ({"pair_id": "builtin_00"}, "dataset", "is required with pair_id"),
    ({**CUSTOM, "calibration": "../../etc"}, "calibration", "no run folder"),
    ([1, 2], "body", "JSON object"),
])
def test_bad_fields_are_422_naming_the_field(client, body, field, words):
    answer = submit(client, body, status=422)
    assert answer["field"] == field and words in answer["error"], answer


def test_body_checks(client):
    wrong_type = client.post("/api/experiments", content=json.dumps(CUSTOM), headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415 and "application/json" in wrong_type.json()["error"]
    broken = client.post("/api/experiments", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["error"]
    huge = client.post("/api/experiments", content=b"[" + b"1," * MAX_BODY_BYTES + b"1]",
                       headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and f"at most {MAX_BODY_BYTES}" in huge.json()["error"]
    assert client.get("/api/info").json()["queue"]["waiting"] == []  # nothing was queued


# -- an experiment ----------------------------------------------------------------------------
def test_experiment_streams_every_lane_then_the_scored_runs(client):
    started = submit(client, CUSTOM)
    assert started["position"] == 0
    messages = read_events(client, started["events"])
    types = [m["type"] for m in messages]
    assert types[:3] == ["queued", "running", "started"] and types[-1] == "done", types
    # "done" is published as the state turns done and the queue lets go: a page acting on it at
    # once finds the model free (the work used to publish it before the queue knew).
    assert client.get(f"/api/experiments/{started['id']}").json()["state"] == "done"
    assert client.get("/api/info").json()["queue"]["running"] is None
    start = messages[2]
    lanes = [lane["lane"] for lane in start["lanes"]]
    assert lanes == ["ignore@-", "oracle@-", "injection@t4", "flush@t4"]
    assert start["problem"]["variation_type"] == "single_number" and start["update_source"] == "generated erratum"
    assert start["calibration"]["calibrated"] is False and "uncalibrated" in start["calibration"]["note"]
    runs = {m["lane"]: m for m in messages if m["type"] == "run"}
    assert set(runs) == set(lanes)
    for lane, run in runs.items():
        tokens = [m for m in messages if m["type"] == "token" and m["lane"] == lane]
        # Streamed tokens are the run's own, from t0 on, in order; the run comes after them.
        assert [m["i"] for m in tokens] == list(range(run["t0"], len(run["pieces"])))
        assert [m["piece"] for m in tokens] == run["pieces"][run["t0"]:]
        assert messages.index(tokens[-1]) < messages.index(run)
        # Values the engine sent while decoding (when it does) are the scored run's.
        for token in tokens:
            for name in ("r", "kl"):
                if token[name] is not None:
                    assert token[name] == pytest.approx(run[name][token["i"]], abs=1e-4), (lane, token)
        assert len(run["kl"]) == len(run["r"]) == len(run["pieces"])
        assert len(run["attribution"]) == len(run["pieces"]) - run["t0"]
        assert set(run["attribution"]) <= set(LABELS)
    assert runs["injection@t4"]["t0"] == 4 and runs["injection@t4"]["inserted"].strip().startswith("Correction:")
    assert runs["flush@t4"]["gap"] == pytest.approx(0.0, abs=1e-5)  # flush recomputes exactly
    assert messages[-1]["first_token_s"] is not None and messages[-1]["first_token_s"] <= messages[-1]["seconds"]
    assert not [m for m in messages if m["type"] == "mark"]  # no calibration chosen: no marks


def test_strategy_lanes_stream_every_token_across_their_updates(client):
    """A strategy decodes in stages (one per update); its lane still streams each token once, in
    order, with the values of the scored run."""
    started = submit(client, {**CUSTOM, "max_new_tokens": 16, "conditions": ["ignore", "oracle", "gradual", "multi_retract"]})
    messages = read_events(client, started["events"])
    assert messages[-1]["type"] == "done", messages[-1]
    runs = {m["lane"]: m for m in messages if m["type"] == "run"}
    assert {"gradual@t4", "multi_retract@t4"} <= set(runs)
    for lane in ("gradual@t4", "multi_retract@t4"):
        run = runs[lane]
        tokens = [m for m in messages if m["type"] == "token" and m["lane"] == lane]
        assert [m["i"] for m in tokens] == list(range(run["t0"], len(run["pieces"])))
        for token in tokens:
            if token["kl"] is not None:
                assert token["kl"] == pytest.approx(run["kl"][token["i"]], abs=1e-4), (lane, token)


def test_picked_pair_is_used_as_is_and_an_edit_makes_a_live_pair(client):
    pair = client.get("/api/pairs", params={"dataset": "builtin-easy"}).json()["pairs"][0]
    body = {"dataset": "builtin-easy", "pair_id": pair["id"], "max_new_tokens": 6, "points": "2",
            "conditions": ["ignore", "oracle", "injection"], "question_a": pair["question_a"], "update": pair["erratum"]}
    start = read_events(client, submit(client, body)["events"], until=lambda m, _: m["type"] == "started")[-1]
    assert start["problem"]["pair_id"] == pair["id"] and start["update"] == pair["erratum"]
    assert start["update_source"] == "the pair's erratum"
    edited = {**body, "question_b": pair["question_b"] + " Then add 2.", "update": ""}
    start = read_events(client, submit(client, edited)["events"], until=lambda m, _: m["type"] == "started")[-1]
    assert start["problem"]["pair_id"] == "live" and start["problem"]["question_b"].endswith("Then add 2.")
    assert start["update_source"] == "generated erratum"


def test_script_in_every_text_field_stays_data(client):
    body = {**CUSTOM, "question_a": PAYLOAD + " A", "question_b": PAYLOAD + " B", "context": PAYLOAD + " C",
            "update": PAYLOAD + " U", "max_new_tokens": 4, "points": "2"}
    answer = submit(client, body)
    raw = []
    with client.stream("GET", answer["events"]) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            raw.append(line)
            if line.startswith("data: ") and json.loads(line[6:])["type"] in ("done", "cancelled", "error"):
                break
    data = [json.loads(line[6:]) for line in raw if line.startswith("data: ")]
    start = next(m for m in data if m["type"] == "started")
    # The texts arrive verbatim as JSON strings (the page writes them with textContent) ...
    assert start["problem"]["question_a"] == PAYLOAD + " A" and start["problem"]["context"] == PAYLOAD + " C"
    assert start["update"] == PAYLOAD + " U"
    # ... and no line of the stream is anything but an SSE field: no HTML leaks out of JSON.
    assert all(line == "" or line.startswith(("data: ", "id: ", "retry: ", ":")) for line in raw)
    # Errors that quote user text are JSON too, never HTML.
    bad = client.post("/api/experiments", json={**CUSTOM, "conditions": [PAYLOAD]})
    assert bad.headers["content-type"] == "application/json" and PAYLOAD[:8] in bad.json()["error"]
    bad = client.get("/api/pairs", params={"dataset": PAYLOAD})
    assert bad.headers["content-type"] == "application/json"


# -- queueing and cancellation ----------------------------------------------------------------
# Held at its first token until cancelled (the `held_long_experiments` fixture).
LONG = {**CUSTOM, "max_new_tokens": HELD_TOKENS, "points": "0.5", "conditions": ["ignore", "oracle", "injection", "flush",
                                                                         "partial", "noise", "repeat"]}


def test_second_request_queues_third_is_refused_and_cancel_lets_the_queue_move(make_client, held_long_experiments):
    client = make_client(max_waiting=1, subscribe_grace=60)
    first = submit(client, LONG)
    second = submit(client, CUSTOM)
    assert (first["position"], second["position"]) == (0, 1)
    refused = client.post("/api/experiments", json=CUSTOM)
    assert refused.status_code == 429
    assert "busy" in refused.json()["error"] and "at most 1" in refused.json()["error"]
    wait_for_state(client, first["id"], ("running",))  # held there until cancelled
    queue = client.get("/api/info").json()["queue"]
    assert queue["waiting"] == [second["id"]] and queue["running"] == first["id"]
    assert client.post(f"/api/experiments/{first['id']}/cancel", json={}).json()["cancelling"] is True
    ended = wait_for_state(client, first["id"], ("cancelled", "done"))
    assert ended["state"] == "cancelled" and ended["reason"] == "cancelled from the page"
    messages = read_events(client, second["events"])
    assert messages[0] == {**messages[0], "type": "queued", "position": 1}
    assert messages[-1]["type"] == "done"


def test_closing_the_stream_cancels_the_running_experiment(client, held_long_experiments):
    answer = submit(client, LONG)
    tokens = read_events(client, answer["events"], until=lambda m, _: m["type"] == "token")
    assert tokens[-1]["type"] == "token"  # the stream is now closed by the reader, as a closed tab
    ended = wait_for_state(client, answer["id"], ("cancelled", "done"))
    assert ended["state"] == "cancelled" and ended["reason"] == "the page was closed"
    assert client.get("/api/info").json()["queue"]["running"] is None


def test_an_experiment_nobody_listens_to_is_cancelled(make_client, held_long_experiments):
    client = make_client(subscribe_grace=0.2)
    answer = submit(client, LONG)
    ended = wait_for_state(client, answer["id"], ("cancelled", "done"))
    assert ended["state"] == "cancelled" and "no page subscribed" in ended["reason"]


def test_cancelling_a_queued_experiment_ends_it_at_once(make_client, held_long_experiments):
    client = make_client(subscribe_grace=60)
    first, second = submit(client, LONG), submit(client, CUSTOM)
    client.post(f"/api/experiments/{second['id']}/cancel", json={})
    assert client.get(f"/api/experiments/{second['id']}").json()["state"] == "cancelled"
    client.post(f"/api/experiments/{first['id']}/cancel", json={})
    assert wait_for_state(client, first["id"], ("cancelled", "done"))["state"] == "cancelled"
    assert client.get("/api/experiments/x999999").status_code == 404


# -- marks from a calibration -----------------------------------------------------------------
def test_calibration_marks_follow_the_runs_curves(client, runs_root):
    summary = client.get("/api/calibration", params={"id": CALIBRATION_ID}).json()
    assert summary["alpha"] == 0.05 and set(summary["points"]) == {"t6"}
    body = {**CUSTOM, "points": "6", "max_new_tokens": 14, "calibration": CALIBRATION_ID}
    messages = read_events(client, submit(client, body)["events"])
    start = next(m for m in messages if m["type"] == "started")
    assert start["calibration"]["calibrated"] and start["calibration"]["points"]["t6"]["note"] is None
    assert "tiny:llama" in start["calibration"]["note"]  # calibrated on another model: said so
    rules = {e["event"]: e for e in start["calibration"]["points"]["t6"]["events"]}
    assert set(rules) == {"detection_latency", "adaptation_latency", "adaptation_latency_kl"}
    for run in (m for m in messages if m["type"] == "run" and m["point"] == "t6"):
        marks = {m["event"]: m for m in messages if m["type"] == "mark" and m["lane"] == run["lane"]}
        assert set(marks) == set(rules), run["lane"]  # every event: reached or censored
        r = np.array([np.nan if v is None else v for v in run["r"]])[run["t0"]:]
        for name, mark in marks.items():
            if rules[name]["curve"] != "log_ratio":
                continue
            # The later of the two folds' events, as measure.analysis.calibration dates them.
            fold = [event_latency(r, rule["window"], rule["threshold"]) for rule in rules[name]["rules"]]
            expected = (len(r), True) if any(f.censored for f in fold) else (max(f.value for f in fold), False)
            assert (mark["k"], mark["censored"]) == expected, (run["lane"], name)
            assert mark["index"] == run["t0"] + mark["k"] - 1


def test_calibration_at_another_point_leaves_the_point_uncalibrated(client):
    body = {**CUSTOM, "points": "4", "max_new_tokens": 8, "calibration": CALIBRATION_ID}
    messages = read_events(client, submit(client, body)["events"])
    start = next(m for m in messages if m["type"] == "started")
    assert "not t4: uncalibrated here" in start["calibration"]["points"]["t4"]["note"]
    assert not [m for m in messages if m["type"] == "mark"]


def test_one_lane_per_point_label():
    from measure.serve.requests import parse_experiment

    spec = parse_experiment({"question_a": QUESTION_A, "points": "4,04,0.5,4"})
    assert spec.point_texts == ("4", "0.5") and [p.label for p in spec.points] == ["t4", "f0.5"]
    assert spec.question_b == QUESTION_A  # no B given: an identical control
