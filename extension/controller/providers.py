"""What the caches with a credential provider plugin report about it, for the Extension's condition
``UpstreamCredentialsValid-<upstream>`` and the metric behind ``RegistryCacheUpstreamCredentialsInvalid``.

The controller never runs a plugin: its image is chosen by a Shoot's author, and run inside the controller it
would run with the controller's identity (every shoot's kubeconfig, the seed's Secrets) and network. Nor can it
check such a cache's upstream itself: the credentials exist only inside the cache Pod, for minutes or hours. What
it does instead, reading only (the shoot's Pods and their logs, no exec, nothing from the Pod's file system):

- the cache Pod's init container that copies the plugin: a plugin image that cannot be pulled, or that holds no
  binary at ``binaryPath`` (``cp`` exits 1, its words kept as the termination message), is
  :data:`~extension.upstreamcheck.PLUGIN_MISSING`;
- the cache container's log: the credential helper writes one logfmt line per renewal and per failure, and one a
  minute while the credentials are in use (``component=registry-cache-credential-provider``, ``event``
  ``renewed`` | ``cached`` | ``failed`` with a ``reason``). The last such line of each Pod says how the plugin
  last fared: ``PluginMissing``, ``PluginFailed`` (it exited non-zero or did not answer in time: its token
  endpoint down, an identity refused, ...), ``InvalidAnswer``, ``NoCredentials``. Only the last
  :data:`LOG_TAIL_LINES` lines are read (at most :data:`LOG_LIMIT_BYTES`); what one Pod said last is kept while
  the Pod is the same, for when its recent log holds no line of the helper (nothing needed credentials).

What a cache writes into its log is what the Shoot's plugin makes it write: a line is parsed as data, cut and
stripped of anything but printable ASCII, and only names the Shoot's own cache. Pure but for :class:`PluginChecks`,
which reads.
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from api import names
from extension.constants import (
    APP_NAME,
    APP_NAME_LABEL,
    CONTAINER_NAME,
    CREDENTIAL_PROVIDER_INIT_CONTAINER,
    CREDENTIAL_PROVIDER_LOG_COMPONENT,
    SHOOT_NAMESPACE,
)
from extension.runtime.kube import ApiError, Kube
from extension.upstreamcheck import (
    PLUGIN_ANSWERED,
    PLUGIN_FAILED,
    PLUGIN_INVALID_ANSWER,
    PLUGIN_MISSING,
    PLUGIN_NO_CREDENTIALS,
    PLUGIN_NOT_ASKED,
    CheckResult,
    PluginTarget,
)

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 2000
LOG_LIMIT_BYTES = 2 << 20
MAX_FIELD = 300
_REASONS = {"PluginMissing": PLUGIN_MISSING, "PluginFailed": PLUGIN_FAILED, "InvalidAnswer": PLUGIN_INVALID_ANSWER,
            "NoCredentials": PLUGIN_NO_CREDENTIALS}
# the worst first: what a condition over several Pods names
_SEVERITY = (PLUGIN_MISSING, PLUGIN_FAILED, PLUGIN_INVALID_ANSWER, PLUGIN_NO_CREDENTIALS, PLUGIN_ANSWERED,
             PLUGIN_NOT_ASKED)
_UNPRINTABLE = re.compile(r"[^ -~]")
_MARKER = f"component={CREDENTIAL_PROVIDER_LOG_COMPONENT}"


@dataclass(frozen=True)
class HelperLine:
    """One line of a cache's credential helper (every field printable ASCII, cut)."""

    time: str
    level: str
    event: str  # renewed | cached | failed
    message: str
    reason: str = ""
    expires: str = ""


def _clean(text: str) -> str:
    return _UNPRINTABLE.sub("?", text)[:MAX_FIELD]


def parse_lines(text: str, upstream: str) -> list[HelperLine]:
    """The credential helper's lines in a cache's log about ``upstream``, in order; anything else is skipped."""
    out = []
    for raw in text.splitlines():
        if _MARKER not in raw or len(raw) > 4096:
            continue
        try:
            words = shlex.split(raw)
        except ValueError:
            continue
        fields = dict(word.split("=", 1) for word in words if "=" in word)
        if fields.get("component") != CREDENTIAL_PROVIDER_LOG_COMPONENT or fields.get("upstream") != upstream \
                or fields.get("event") not in ("renewed", "cached", "failed"):
            continue
        out.append(HelperLine(_clean(fields.get("time", "")), _clean(fields.get("level", "")), fields["event"],
                              _clean(fields.get("msg", "")), _clean(fields.get("reason", "")),
                              _clean(fields.get("expires", ""))))
    return out


def init_problem(pod: dict[str, Any]) -> str | None:
    """Why the init container that copies the plugin has not done so (None: it has, or is not there yet)."""
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        if status.get("name") != CREDENTIAL_PROVIDER_INIT_CONTAINER:
            continue
        state = status.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode") == 0:
            return None
        waiting = state.get("waiting") or {}
        last = (status.get("lastState") or {}).get("terminated") or state.get("terminated") or {}
        parts = []
        if waiting.get("reason"):
            parts.append(_clean(waiting["reason"]) + (f" ({_clean(waiting['message'])})" if waiting.get("message")
                                                      and "Image" in waiting["reason"] else ""))
        if last:
            words = [line.strip() for line in (last.get("message") or "").splitlines() if line.strip()]
            parts.append(f"exit {last.get('exitCode')}" + (f": {_clean(words[-1])}" if words else ""))
        if not parts:
            return None  # running or starting
        return f"the init container {CREDENTIAL_PROVIDER_INIT_CONTAINER} of Pod {pod['metadata']['name']} did not " \
               f"copy the plugin: {', '.join(parts)}"
    return None


def line_result(target: PluginTarget, pod: str, line: HelperLine) -> CheckResult:
    if line.event == "failed":
        result = _REASONS.get(line.reason, PLUGIN_FAILED)
        return CheckResult(target.upstream, result, None,
                           f"credential provider plugin {target.provider} of Pod {pod} at {line.time}: {line.message}")
    until = f", its credentials valid until {line.expires}" if line.expires else ""
    what = "renewed its credentials" if line.event == "renewed" else "credentials in use"
    return CheckResult(target.upstream, PLUGIN_ANSWERED, None,
                       f"credential provider plugin {target.provider} of Pod {pod}: {what} at {line.time}{until}")


def combine(target: PluginTarget, per_pod: Sequence[CheckResult]) -> CheckResult:
    """One result for a cache from its Pods': the worst, naming each Pod that reports it."""
    if not per_pod:
        what = f"no Pod of {target.statefulset} reports on its credential provider plugin {target.provider} yet"
        return CheckResult(target.upstream, PLUGIN_NOT_ASKED, None, what)
    worst = min(per_pod, key=lambda r: _SEVERITY.index(r.result))
    details = [r.detail for r in per_pod if r.result == worst.result]
    return CheckResult(target.upstream, worst.result, None, "; ".join(details))


class PluginChecks:
    """Reads what the Pods of each plugin cache report (see the module). ``shoot_target(namespace)``: the client
    of that Extension's shoot."""

    def __init__(self, shoot_target: Callable[[str], Kube], tail_lines: int = LOG_TAIL_LINES,
                 limit_bytes: int = LOG_LIMIT_BYTES):
        self.shoot_target, self.tail_lines, self.limit_bytes = shoot_target, tail_lines, limit_bytes
        self._last: dict[tuple[str, str, str], tuple[str, CheckResult]] = {}  # (ns, upstream, pod) -> (uid, result)
        self._lock = threading.Lock()

    def __call__(self, namespace: str, targets: Sequence[PluginTarget]) -> list[CheckResult]:
        try:
            shoot = self.shoot_target(namespace)
            pods = shoot.list("Pod", SHOOT_NAMESPACE, label_selector=f"{APP_NAME_LABEL}={APP_NAME}")
        except (ApiError, OSError) as exc:  # nothing known: Unknown, not a made-up failure
            return [CheckResult(t.upstream, PLUGIN_NOT_ASKED, None, f"cannot read the cache Pods: {_error(exc)}")
                    for t in targets]
        out = []
        for target in targets:
            own = sorted((p for p in pods if p["metadata"]["name"].startswith(target.statefulset + "-")
                          and (p["metadata"].get("labels") or {}).get(names.UPSTREAM_HOST_LABEL)
                          == names.upstream_label_value(target.upstream)), key=lambda p: p["metadata"]["name"])
            out.append(combine(target, [r for pod in own if (r := self._pod(namespace, shoot, target, pod))]))
        self._forget(namespace, {(t.upstream, p["metadata"]["name"], p["metadata"].get("uid", ""))
                                 for t in targets for p in pods})
        return out

    def _pod(self, namespace: str, shoot: Kube, target: PluginTarget, pod: dict[str, Any]) -> CheckResult | None:
        name, uid = pod["metadata"]["name"], pod["metadata"].get("uid", "")
        problem = init_problem(pod)
        if problem is not None:
            return CheckResult(target.upstream, PLUGIN_MISSING, None, f"{problem} (image {target.image})")
        running = any(s.get("name") == CONTAINER_NAME and ("running" in (s.get("state") or {})
                                                           or (s.get("lastState") or {}).get("terminated"))
                      for s in (pod.get("status") or {}).get("containerStatuses") or [])
        if not running:
            return None
        try:
            text = shoot.pod_log(SHOOT_NAMESPACE, name, CONTAINER_NAME, tail_lines=self.tail_lines,
                                 limit_bytes=self.limit_bytes)
        except ApiError as exc:
            return CheckResult(target.upstream, PLUGIN_NOT_ASKED, None, f"cannot read the log of Pod {name}: "
                                                                        f"{_error(exc)}")
        lines = parse_lines(text, target.upstream)
        key = (namespace, target.upstream, name)
        with self._lock:
            if lines:
                result = line_result(target, name, lines[-1])
                self._last[key] = (uid, result)
                return result
            known = self._last.get(key)
        return known[1] if known is not None and known[0] == uid else None

    def _forget(self, namespace: str, present: set[tuple[str, str, str]]) -> None:
        """Drop what Pods that are gone (or replaced) said."""
        with self._lock:
            for key in [k for k, (uid, _) in self._last.items() if k[0] == namespace
                        and (k[1], k[2], uid) not in present]:
                del self._last[key]

    def forget(self, namespace: str) -> None:
        with self._lock:
            for key in [k for k in self._last if k[0] == namespace]:
                del self._last[key]


def _error(exc: BaseException) -> str:
    describe = getattr(exc, "describe", None)
    return _clean(describe() if callable(describe) else f"{type(exc).__name__}: {exc}")
