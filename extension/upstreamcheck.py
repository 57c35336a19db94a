"""Do an upstream's credentials work? Checked as a registry client (``docker login``) checks them.

1. ``GET <remoteURL>/v2/`` without credentials;
2. on 401, the ``WWW-Authenticate`` challenge names the way in: ``Bearer realm=...,service=...`` -> ``GET
   <realm>?service=<service>&account=<username>`` with the credentials as basic auth, then ``GET /v2/`` with
   the token it hands out, but only to a realm that distribution 3.1 would send them to (:func:`realm_allowed`;
   any other realm is :data:`UNEXPECTED`, and nothing is sent to it); ``Basic`` -> ``GET /v2/`` with the
   credentials;
3. an upstream that answers ``/v2/`` without credentials gets them once more (``GET /v2/`` with basic
   auth): some registries refuse even public content to wrong credentials.

The result is :data:`VALID`, :data:`INVALID` (the upstream or its token service refused them: 401/403),
:data:`UNREACHABLE` (no connection, a timeout, a 5xx: nothing is known about the credentials) or
:data:`UNEXPECTED` (an answer no registry gives, e.g. a redirect or a 401 without a challenge), with the
HTTP status and a detail that never holds the credentials or a token.

A cache whose credentials come from a credential provider plugin (:class:`PluginTarget`) is not checked here:
the controller has no credentials for it and never runs a plugin (its image is a Shoot author's choice). What its
cache says about the plugin is read by :mod:`extension.controller.providers`, with the results
:data:`PLUGIN_ANSWERED`, :data:`PLUGIN_FAILED`, :data:`PLUGIN_MISSING`, :data:`PLUGIN_INVALID_ANSWER`,
:data:`PLUGIN_NO_CREDENTIALS` and :data:`PLUGIN_NOT_ASKED`.

Every request has ``timeout`` seconds; :func:`check_all` runs the upstreams concurrently and returns after
``deadline`` seconds at the latest (what has not answered by then is unreachable), so that a reconcile is
never held up for long. Redirects are not followed (a credential is never sent to a host it was not meant
for). Proxies: the controller's own environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), not the
cache's ``proxy`` settings, which are addresses in the shoot's network; an upstream the controller cannot
reach is reported unreachable, never as bad credentials.
"""

from __future__ import annotations

import base64
import concurrent.futures
import functools
import http.client
import ipaddress
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from publicsuffixlist import PublicSuffixList

from api.secrets import Credentials

VALID, INVALID, UNREACHABLE, UNEXPECTED = "Valid", "Invalid", "Unreachable", "Unexpected"
# a cache with a credential provider plugin, as its helper reports (extension/controller/providers.py)
PLUGIN_ANSWERED = "PluginAnswered"
PLUGIN_FAILED = "PluginFailed"  # it exited non-zero or did not answer in time (e.g. its token endpoint is down)
PLUGIN_MISSING = "PluginMissing"  # not in the cache Pod: its image cannot be pulled, holds no such file, ...
PLUGIN_INVALID_ANSWER = "InvalidAnswer"  # it answered something that is not a CredentialProviderResponse
PLUGIN_NO_CREDENTIALS = "NoCredentials"  # its answer has no credentials for the upstream
PLUGIN_NOT_ASKED = "PluginNotAsked"  # nothing known yet: no request of the cache needed credentials
PLUGIN_FAILURES = (PLUGIN_FAILED, PLUGIN_MISSING, PLUGIN_INVALID_ANSWER, PLUGIN_NO_CREDENTIALS)
REQUEST_TIMEOUT_SECONDS = 3.0
DEADLINE_SECONDS = 5.0
USER_AGENT = "registry-cache-credentials-check"


@dataclass(frozen=True)
class CheckResult:
    upstream: str
    result: str  # VALID, INVALID, UNREACHABLE or UNEXPECTED
    http_status: int | None  # the answer that decided it (None: no answer)
    detail: str  # what was asked and answered; never a credential or a token


@dataclass(frozen=True)
class Target:
    upstream: str
    remote_url: str
    credentials: Credentials


@dataclass(frozen=True)
class PluginTarget:
    """A cache whose credentials come from a credential provider plugin: told by its StatefulSet's Pods."""

    upstream: str
    provider: str  # the plugin's name
    image: str  # the image its init container copies it from
    statefulset: str


# --- pure: challenges --------------------------------------------------------------------------------------

_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str | None) -> tuple[str, dict[str, str]] | None:
    """``WWW-Authenticate: Bearer realm="...",service="..."`` -> ("bearer", {"realm": ..., "service": ...})."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        return None
    params = {m.group(1).lower(): (m.group(2).replace('\\"', '"') if m.group(2) is not None else m.group(3))
              for m in _PARAM.finditer(rest)}
    return scheme.lower(), params


def realm_allowed(remote_url: str, realm: str) -> bool:
    """Whether the credentials of the upstream at ``remote_url`` may go to the token ``realm`` its challenge
    names.

    distribution 3.1's rule (``registry/proxy/proxyauth.go`` ``realmAllowed``, commit f215e513 "bind bearer
    realms to upstream trust boundary", the fix of GHSA-3p65-76g6-3w7r / CVE-2026-33540: its proxy keeps only the
    bearer challenges whose realm passes): the realm is an absolute URL, and its host (with the port, as
    written, case-insensitive) is the remote's, or both hosts are names, neither an IP address nor
    ``localhost``, with the same registrable domain (eTLD+1 by the Public Suffix List, its private section
    included as Go's ``publicsuffix`` has it: ``auth.docker.io`` for ``registry-1.docker.io``, but not
    ``b.github.io`` for ``a.github.io``). Stricter than distribution in two points: a remote reached over https
    gets a realm over https only (distribution does not look at the scheme, so an https upstream could have the
    credentials sent in clear text), and a host without a registrable domain (a public suffix itself) matches
    only itself."""
    remote, target = urllib.parse.urlsplit(remote_url), urllib.parse.urlsplit(realm)
    if target.scheme not in ("http", "https") or not _hostport(target) or not _hostport(remote):
        return False
    if remote.scheme == "https" and target.scheme != "https":
        return False
    if _hostport(remote).lower() == _hostport(target).lower():
        return True
    remote_host, realm_host = (remote.hostname or "").lower(), (target.hostname or "").lower()
    if not remote_host or not realm_host or _literal_or_local(remote_host) or _literal_or_local(realm_host):
        return False
    domain = _registrable_domain(remote_host)
    return domain is not None and domain == _registrable_domain(realm_host)


def _hostport(parts: urllib.parse.SplitResult) -> str:
    """Go's ``URL.Host``: the host and port as written, without user info."""
    return parts.netloc.rpartition("@")[2]


def _literal_or_local(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # the list the package ships; nothing is fetched


def _registrable_domain(host: str) -> str | None:
    """eTLD+1, None where Go's ``EffectiveTLDPlusOne`` fails (a public suffix, an empty label)."""
    if host.startswith(".") or host.endswith(".") or ".." in host:
        return None
    domain = _public_suffixes().privatesuffix(host)
    return domain if isinstance(domain, str) else None


def token_url(realm: str, service: str | None, username: str) -> str:
    """The token request of ``docker login``: the realm with ``service`` and ``account`` (no scope)."""
    parts = urllib.parse.urlsplit(realm)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if service:
        query.append(("service", service))
    query.append(("account", username))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


# --- HTTP ----------------------------------------------------------------------------------------------------

class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx comes back as an HTTPError: credentials never follow a redirect


_OPENER = urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=ssl.create_default_context()))


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


class _NoAnswer(Exception):
    pass


def _opener(ssl_context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    if ssl_context is None:
        return _OPENER
    return urllib.request.build_opener(_NoRedirect(), urllib.request.HTTPSHandler(context=ssl_context))


def _get(url: str, timeout: float, authorization: str | None = None,
         opener: urllib.request.OpenerDirector = _OPENER) -> _Answer:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
            return _Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read(65536))
    except urllib.error.HTTPError as exc:
        body = exc.read(65536) if exc.fp is not None else b""
        return _Answer(exc.code, {k.lower(): v for k, v in (exc.headers or {}).items()}, body)
    except (TimeoutError, urllib.error.URLError, OSError, ssl.SSLError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise _NoAnswer(f"{type(reason).__name__}: {reason}") from None


def _basic(creds: Credentials) -> str:
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc


def check(target: Target, timeout: float = REQUEST_TIMEOUT_SECONDS,
          ssl_context: ssl.SSLContext | None = None) -> CheckResult:
    """Check one upstream's credentials as a registry client does (see the module). ``ssl_context``: whom to
    trust over https (default: the system's CAs)."""
    up, creds = target.upstream, target.credentials
    opener = _opener(ssl_context)

    def get(url: str, timeout: float, authorization: str | None = None) -> _Answer:
        return _get(url, timeout, authorization, opener)

    base = target.remote_url.rstrip("/") + "/v2/"
    where, asked = "GET /v2/", base
    try:
        first = get(base, timeout)
        if first.status >= 500:
            return CheckResult(up, UNREACHABLE, first.status, f"{where} at {_host(base)}: {first.status}")
        if first.status == 200:
            where = "GET /v2/ with the credentials (the upstream needs none)"
            again = get(base, timeout, _basic(creds))
            return _decide(up, again, where, _host(base))
        if first.status != 401:
            return CheckResult(up, UNEXPECTED, first.status, f"{where} at {_host(base)}: {first.status}")
        challenge = parse_challenge(first.headers.get("www-authenticate"))
        if challenge is None:
            return CheckResult(up, UNEXPECTED, 401, f"{where} at {_host(base)}: 401 without a challenge")
        scheme, params = challenge
        if scheme == "basic":
            where = "GET /v2/ with the credentials (basic auth)"
            return _decide(up, get(base, timeout, _basic(creds)), where, _host(base))
        if scheme != "bearer" or not params.get("realm", "").startswith(("http://", "https://")):
            return CheckResult(up, UNEXPECTED, 401, f"{where} at {_host(base)}: unsupported challenge {scheme}")
        realm = params["realm"]
        if not realm_allowed(target.remote_url, realm):
            origin = urllib.parse.urlsplit(realm)
            wanted = "an https URL" if base.startswith("https:") else "a URL"
            return CheckResult(up, UNEXPECTED, 401, (
                f"{where} at {_host(base)}: 401 naming the token realm {origin.scheme}://{_hostport(origin)}, "
                f"not {wanted} of this host or its domain: the credentials were not sent there"))
        where, asked = "GET token", realm
        token_answer = get(token_url(realm, params.get("service"), creds.username), timeout, _basic(creds))
        if token_answer.status != 200:
            return _decide(up, token_answer, where, _host(realm))
        try:
            body = json.loads(token_answer.body or b"{}")
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            return CheckResult(up, UNEXPECTED, 200, f"{where} at {_host(realm)}: 200 without a token")
        where = "GET /v2/ with the token"
        return _decide(up, get(base, timeout, f"Bearer {token}"), where, _host(base))
    except _NoAnswer as exc:
        return CheckResult(up, UNREACHABLE, None, f"{where} at {_host(asked)}: no answer ({exc})")


def _decide(upstream: str, answer: _Answer, where: str, host: str) -> CheckResult:
    detail = f"{where} at {host}: {answer.status}"
    if answer.status == 200:
        return CheckResult(upstream, VALID, 200, detail)
    if answer.status in (401, 403):
        return CheckResult(upstream, INVALID, answer.status, detail)
    if answer.status >= 500:
        return CheckResult(upstream, UNREACHABLE, answer.status, detail)
    return CheckResult(upstream, UNEXPECTED, answer.status, detail)


def check_all(targets: Sequence[Target], timeout: float = REQUEST_TIMEOUT_SECONDS,
              deadline: float = DEADLINE_SECONDS) -> list[CheckResult]:
    """Check every target concurrently; returns within ``deadline`` seconds, in the targets' order."""
    if not targets:
        return []
    started = time.monotonic()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(targets)), thread_name_prefix="upstream-check")
    try:
        futures = [pool.submit(check, t, timeout) for t in targets]
        concurrent.futures.wait(futures, timeout=deadline)
        out = []
        for target, future in zip(targets, futures):
            if future.done() and future.exception() is None:
                out.append(future.result())
            elif future.done():
                out.append(CheckResult(target.upstream, UNEXPECTED, None,
                                       f"the check failed: {type(future.exception()).__name__}"))
            else:
                out.append(CheckResult(target.upstream, UNREACHABLE, None,
                                       f"no answer within {time.monotonic() - started:.1f}s"))
        return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
