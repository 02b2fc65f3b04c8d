"""Who may talk to ``measure serve``: the launch token (query, header, cookie), the Host header
for every bind address, and the Origin of requests that change anything."""

from __future__ import annotations

import pytest
from serve_helpers import BASE_URL, CALIBRATION_ID, HELD_TOKENS, TOKEN

from measure.cli import main
from measure.serve.cli import page_address
from measure.serve.guard import allowed_hosts, cookie_name, host_name
from measure.testing import QUESTION_A, QUESTION_B

UPDATE = {"question_a": QUESTION_A, "question_b": QUESTION_B}
HELD = {**UPDATE, "max_new_tokens": HELD_TOKENS, "points": "0.5", "conditions": ["ignore", "oracle", "injection"]}


def one_line_refusal(response, status: int, field: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field and "\n" not in body["error"], body
    return body["error"]


# -- the launch token ---------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/info"), ("GET", "/api/datasets"), ("GET", "/api/pairs"), ("GET", "/api/runs"),
    ("GET", "/api/runs/events?id=calibrated"), ("GET", "/api/calibration?id=calibrated"),
    ("GET", "/api/experiments/x1"), ("GET", "/api/experiments/x1/events"),
    ("POST", "/api/update"), ("POST", "/api/experiments"), ("POST", "/api/experiments/x1/cancel"),
])
def test_every_api_route_refuses_a_request_without_the_token(make_client, method, path):
    client = make_client(authorized=False)
    error = one_line_refusal(client.request(method, path, json=UPDATE), 403, "token")
    assert error.startswith("no token") and "?token=" in error
    wrong = client.request(method, path, json=UPDATE, headers={"Authorization": "token not-the-token-at-all"})
    assert one_line_refusal(wrong, 403, "token").startswith("a wrong token")


def test_the_page_without_the_token_says_how_to_open_it(make_client):
    page = make_client(authorized=False).get("/")
    assert page.status_code == 403 and page.text.count("\n") == 1 and "?token=" in page.text


def test_the_token_as_query_parameter_or_authorization_header(make_client):
    client = make_client(authorized=False)
    assert client.get("/api/info", params={"token": TOKEN}).status_code == 200
    assert client.get("/api/info", headers={"Authorization": f"token {TOKEN}"}).status_code == 200
    assert client.get("/api/info", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/api/info", headers={"Authorization": TOKEN}).status_code == 403  # no scheme


def test_opening_the_printed_address_keeps_the_token_in_a_strict_cookie(make_client):
    client = make_client(authorized=False)
    opened = client.get("/", params={"token": TOKEN}, follow_redirects=False)
    # The token leaves the address bar (and the history) at once; the cookie carries it on.
    assert opened.status_code == 303 and opened.headers["location"] == "/"
    cookie = opened.headers["set-cookie"]
    assert cookie.startswith(f"{cookie_name(8765)}={TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert client.get("/").status_code == 200  # the client keeps the cookie, as a browser does
    assert client.get("/api/info").status_code == 200
    assert client.post("/api/update", json=UPDATE).status_code == 200
    client.cookies.clear()
    assert client.get("/api/info").status_code == 403


def test_cookies_of_another_port_or_garbage_are_no_token(make_client):
    client = make_client(authorized=False)
    assert client.get("/api/info", headers={"Cookie": f"{cookie_name(9999)}={TOKEN}"}).status_code == 403
    assert client.get("/api/info", headers={"Cookie": '";;=\\x00 ""; ==;'}).status_code == 403


def test_no_token_switches_the_check_off(make_client):
    assert make_client(authorized=False, token=None).get("/api/info").status_code == 200


# -- Host ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:8765", 200), ("localhost:8765", 200), ("[::1]:8765", 200), ("LOCALHOST", 200),
    ("evil.example:8765", 400), ("127.0.0.1.evil.example", 400), ("[::1", 400), ("127.0.0.1:x", 400), ("", 400),
])
def test_the_host_header_is_checked(make_client, host, status):
    response = make_client().get("/api/info", headers={"Host": host})
    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["field"] == "host" and "--allow-host" in response.json()["error"]


def test_allowed_hosts_for_every_bind_address():
    assert set(allowed_hosts("127.0.0.1")) == {"localhost", "127.0.0.1", "::1"}
    assert set(allowed_hosts("::1")) == {"localhost", "127.0.0.1", "::1"}
    # A wildcard bind serves only the names the user gives (and loopback), never any Host.
    assert set(allowed_hosts("0.0.0.0")) == {"localhost", "127.0.0.1", "::1"}
    assert set(allowed_hosts("::", ("box.lan", "[fd00::5]:8765"))) == {"localhost", "127.0.0.1", "::1", "box.lan",
                                                                       "fd00::5"}
    assert "192.168.1.20" in allowed_hosts("192.168.1.20")
    assert host_name("[fd00::5]:80") == "fd00::5" and host_name("Box.LAN:8765") == "box.lan"


def test_a_wildcard_bind_serves_the_allowed_names_only(make_client):
    client = make_client(allowed_hosts=allowed_hosts("0.0.0.0", ("box.lan",)))
    assert client.get("/api/info", headers={"Host": "box.lan:8765"}).status_code == 200
    assert client.get("/api/info", headers={"Host": "192.168.1.20:8765"}).status_code == 400


# -- Origin -------------------------------------------------------------------------------------
def test_requests_that_change_anything_must_come_from_this_origin(make_client, held_long_experiments):
    client = make_client(subscribe_grace=60)
    assert client.post("/api/update", json=UPDATE, headers={"Origin": BASE_URL}).status_code == 200
    for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "https://127.0.0.1:8765"):
        refused = client.post("/api/update", json=UPDATE, headers={"Origin": origin})
        assert "is not this server" in one_line_refusal(refused, 403, "origin")
    held = client.post("/api/experiments", json=HELD).json()
    # A form posted from another site (the token is there only if the attacker had it) cannot cancel.
    forged = client.post(f"/api/experiments/{held['id']}/cancel", content=b"",
                         headers={"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"})
    assert forged.status_code == 403
    assert client.get(f"/api/experiments/{held['id']}").json()["state"] in ("queued", "running")
    assert client.post(f"/api/experiments/{held['id']}/cancel", headers={"Origin": BASE_URL}).status_code == 200


def test_another_site_cannot_open_a_stream_even_without_a_token(make_client):
    client = make_client(authorized=False, token=None)  # --no-token
    foreign = client.get("/api/runs/events", params={"id": CALIBRATION_ID}, headers={"Origin": "http://evil.example"})
    assert "is not this server" in one_line_refusal(foreign, 403, "origin")
    assert client.get("/api/info", headers={"Origin": BASE_URL}).status_code == 200


# -- the command line ---------------------------------------------------------------------------
def test_the_printed_address_carries_the_token():
    assert page_address("127.0.0.1", 8765, "abc") == "http://127.0.0.1:8765/?token=abc"
    assert page_address("::1", 80, None) == "http://[::1]:80/"
    assert page_address("0.0.0.0", 80, "t") == "http://127.0.0.1:80/?token=t"


@pytest.mark.parametrize(("flags", "words"), [
    (["--token", "short"], "--token must be 16 to 200 letters"),
    (["--token", "has spaces in it, sixteen+"], "--token must be 16 to 200 letters"),
])
def test_a_bad_token_is_refused_before_loading_a_model(capsys, flags, words):
    assert main(["serve", *flags, "--model", "/nonexistent/model"]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_no_token_warns(capsys):
    assert main(["serve", "--no-token", "--model", "/nonexistent/model"]) == 2
    assert "warning: --no-token" in capsys.readouterr().err
