"""The controller's check of an upstream's credentials (:mod:`extension.upstreamcheck`) against real
registries on this machine: a token-auth upstream (distribution 3 + the token server of the kind scenario)
and a basic-auth one (distribution's htpasswd). Valid, wrong password, revoked, unreachable: each is told
apart, with the HTTP status, and no result ever holds a credential."""

from __future__ import annotations

import socket
import time
import uuid

import pytest

from api.secrets import Credentials
from extension.controller.conditions import merge
from extension.upstreamcheck import INVALID, UNEXPECTED, UNREACHABLE, VALID, Target, check, check_all

from .dataplane import LOOPBACK, free_port
from .tokenauth import TokenUpstream

USER = "robot-check"


@pytest.fixture
def token_upstream(tools, tmp_path):
    """The realm on the registry's own origin (an address: the only realm distribution 3.1 and the check send
    credentials to)."""
    up = TokenUpstream(tools.registry, tmp_path / "token-upstream", USER, uuid.uuid4().hex, same_origin=True)
    try:
        yield up.start()
    finally:
        up.stop()


def _no_secret_in(results, *secrets):
    text = repr(results) + repr(merge([], results, "2026-01-01T00:00:00Z"))
    for secret in secrets:
        assert secret not in text


def test_token_auth_upstream_valid_wrong_revoked_unreachable(token_upstream):
    up = token_upstream
    old_password = up.password
    valid = check(Target("private.example:5000", up.url, Credentials(USER, old_password)))
    assert (valid.result, valid.http_status) == (VALID, 200), valid
    assert "token" in valid.detail

    wrong = check(Target("private.example:5000", up.url, Credentials(USER, "not-the-password")))
    assert (wrong.result, wrong.http_status) == (INVALID, 401), wrong
    assert f"GET token at {LOOPBACK}:{up.token_port}: 401" in wrong.detail

    new_password = up.revoke()
    revoked = check(Target("private.example:5000", up.url, Credentials(USER, old_password)))
    assert (revoked.result, revoked.http_status) == (INVALID, 401), revoked
    assert check(Target("private.example:5000", up.url, Credentials(USER, new_password))).result == VALID

    # the token service away (and with it the registry's origin): unreachable, not bad credentials
    assert up.token_server is not None
    up.token_server.stop()
    no_tokens = check(Target("private.example:5000", up.url, Credentials(USER, new_password)))
    assert (no_tokens.result, no_tokens.http_status) == (UNREACHABLE, None), no_tokens
    # the upstream away altogether
    up.stop()
    gone = check(Target("private.example:5000", up.url, Credentials(USER, new_password)))
    assert (gone.result, gone.http_status) == (UNREACHABLE, None), gone
    assert "Connection refused" in gone.detail or "refused" in gone.detail.lower(), gone
    _no_secret_in([valid, wrong, revoked, no_tokens, gone], old_password, new_password, "not-the-password")


def test_a_realm_on_another_port_gets_no_credentials(tools, tmp_path):
    """The realm on another port of the registry's address: distribution 3.1 sends its credentials nowhere
    there (the pull fails: tests/e2e/test_pull_through.py), and neither does the check: it says so."""
    up = TokenUpstream(tools.registry, tmp_path / "token-upstream", USER, uuid.uuid4().hex).start()
    try:
        result = check(Target("private.example:5000", up.url, Credentials(USER, up.password)))
    finally:
        up.stop()
    assert (result.result, result.http_status) == (UNEXPECTED, 401), result
    assert f"token realm http://{LOOPBACK}:{up.token_port}" in result.detail
    assert "GET /token" not in (up.workdir / "token-server.err").read_text(errors="replace")  # not even asked


def test_basic_auth_upstream(datapath):
    password = uuid.uuid4().hex
    up = datapath.upstream({USER: password})
    valid = check(Target(up.host, up.url, Credentials(USER, password)))
    assert (valid.result, valid.http_status) == (VALID, 200), valid
    wrong = check(Target(up.host, up.url, Credentials(USER, "nope")))
    assert (wrong.result, wrong.http_status) == (INVALID, 401), wrong
    up.restart_with_users({"someone-else": "x"})  # the robot account deleted
    revoked = check(Target(up.host, up.url, Credentials(USER, password)))
    assert (revoked.result, revoked.http_status) == (INVALID, 401), revoked
    _no_secret_in([valid, wrong, revoked], password)


def test_checks_are_concurrent_and_bounded(token_upstream):
    """An upstream that accepts the connection and never answers holds up nothing: all checks return within
    the deadline, the silent one as unreachable, the others with their real result."""
    silent = socket.socket()
    silent.bind((LOOPBACK, 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    refused_port = free_port()
    try:
        targets = [Target("silent.example", f"http://{LOOPBACK}:{silent.getsockname()[1]}", Credentials(USER, "x")),
                   Target("refused.example", f"http://{LOOPBACK}:{refused_port}", Credentials(USER, "x")),
                   Target("private.example", token_upstream.url, Credentials(USER, token_upstream.password))]
        t0 = time.monotonic()
        results = check_all(targets, timeout=10.0, deadline=1.5)
        took = time.monotonic() - t0
    finally:
        silent.close()
    assert took < 2.5, took
    assert [r.result for r in results] == [UNREACHABLE, UNREACHABLE, VALID], results
    assert "no answer within" in results[0].detail
