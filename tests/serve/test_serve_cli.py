"""The ``serve`` subcommand: loopback by default, a warning beyond it, bad flags refused before the
model loads."""

from __future__ import annotations

import pytest

from measure.cli import build_parser, main
from measure.serve.cli import DEFAULT_HOST, exposure_warning, is_loopback


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("localhost", True), ("127.0.0.2", True), ("::1", True),
    ("0.0.0.0", False), ("192.168.1.20", False), ("::", False), ("example.org", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback
    assert (exposure_warning(host, 8765) is None) is loopback


def test_warning_says_what_binding_beyond_loopback_exposes():
    text = exposure_warning("0.0.0.0", 9000)
    assert "0.0.0.0:9000" in text and "unencrypted" in text and "--host 127.0.0.1" in text


def test_defaults_bind_loopback():
    args = build_parser().parse_args(["serve"])
    assert args.host == DEFAULT_HOST == "127.0.0.1" and args.port == 8765 and args.runs_dir == "reports"


def test_bad_port_is_refused_before_loading_a_model(capsys):
    assert main(["serve", "--port", "70000", "--model", "/nonexistent/model"]) == 2
    assert "--port 70000 is not a port number" in capsys.readouterr().err


def test_an_unloadable_model_is_one_line(capsys):
    assert main(["serve", "--model", "/nonexistent/model", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "warning: binding 0.0.0.0:8765" in err and "measure serve: error:" in err
