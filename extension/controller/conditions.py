"""Pure: the Extension's ``status.conditions`` (Gardener's Condition: type, status, lastTransitionTime,
lastUpdateTime, reason, message, codes) from the upstream credential checks and from the caches' health.

Upstream credentials: one condition per cache with credentials, type ``UpstreamCredentialsValid-<upstream>``:
``True`` when the upstream accepted them, ``False`` when it refused them (401/403), ``Unknown`` when it could
not be asked (unreachable, or an answer no registry gives). The message names the upstream, what was asked and the HTTP
status; never a credential.

The caches' health: ``SystemComponentsHealthy`` (:func:`merge_health`; what it says is
:func:`extension.controller.health.caches_condition`'s).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from extension.constants import (
    ERR_INFRA_DEPENDENCIES,
    ERR_INFRA_UNAUTHORIZED,
    SYSTEM_COMPONENTS_HEALTHY_CONDITION,
    UPSTREAM_CREDENTIALS_CONDITION,
)
from extension.upstreamcheck import INVALID, UNREACHABLE, VALID, CheckResult

_STATUS = {VALID: "True", INVALID: "False"}
_REASON = {VALID: "CredentialsAccepted", INVALID: "CredentialsRefused", UNREACHABLE: "UpstreamUnreachable"}
_CODES = {INVALID: [ERR_INFRA_UNAUTHORIZED], UNREACHABLE: [ERR_INFRA_DEPENDENCIES]}
_CONSEQUENCE = {
    VALID: "the upstream accepts this cache's credentials",
    INVALID: "the upstream refuses this cache's credentials: the cache cannot pull private images (it answers "
             "404) and nodes fall back to the upstream; update the credentials Secret",
    UNREACHABLE: "the upstream could not be reached from the controller; nothing is known about the credentials",
}


def condition_type(upstream: str) -> str:
    return f"{UPSTREAM_CREDENTIALS_CONDITION}-{upstream}"


def is_ours(condition: Mapping[str, Any]) -> bool:
    return str(condition.get("type", "")).startswith(UPSTREAM_CREDENTIALS_CONDITION + "-")


def upstream_condition(result: CheckResult, now: str, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    status = _STATUS.get(result.result, "Unknown")
    consequence = _CONSEQUENCE.get(result.result, "the upstream's answer is not a registry's; nothing is known "
                                                  "about the credentials")
    condition: dict[str, Any] = {
        "type": condition_type(result.upstream),
        "status": status,
        "lastTransitionTime": previous["lastTransitionTime"] if previous and previous.get("status") == status
        and previous.get("lastTransitionTime") else now,
        "lastUpdateTime": now,
        "reason": _REASON.get(result.result, "UnexpectedAnswer"),
        "message": f"upstream {result.upstream}: {result.detail}: {consequence}",
    }
    if result.result in _CODES:
        condition["codes"] = list(_CODES[result.result])
    return condition


def merge(existing: Iterable[Mapping[str, Any]] | None, results: Iterable[CheckResult],
          now: str) -> list[dict[str, Any]]:
    """The new conditions list: everything that is not ours as it was, then ours for these results (the
    conditions of caches that are gone, or lost their credentials, are dropped)."""
    current = [dict(c) for c in (existing or [])]
    previous = {c.get("type"): c for c in current if is_ours(c)}
    ours = [upstream_condition(r, now, previous.get(condition_type(r.upstream))) for r in results]
    return [c for c in current if not is_ours(c)] + sorted(ours, key=lambda c: c["type"])


def same_state(a: Iterable[Mapping[str, Any]] | None, b: Iterable[Mapping[str, Any]] | None) -> bool:
    """Equal but for lastUpdateTime: nothing new to write."""
    def strip(cs: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
        return [{k: v for k, v in c.items() if k != "lastUpdateTime"} for c in (cs or [])]
    return strip(a) == strip(b)


def merge_health(conditions: list[dict[str, Any]], status: str, reason: str, message: str,
                 now: str) -> list[dict[str, Any]] | None:
    """The conditions with ``SystemComponentsHealthy`` set; None when nothing changed (no write needed)."""
    kind = SYSTEM_COMPONENTS_HEALTHY_CONDITION
    old = next((c for c in conditions if c.get("type") == kind), None)
    if old and (old.get("status"), old.get("reason"), old.get("message")) == (status, reason, message):
        return None
    new = {"type": kind, "status": status, "reason": reason, "message": message, "lastUpdateTime": now,
           "lastTransitionTime": old["lastTransitionTime"] if old and old.get("status") == status
           and old.get("lastTransitionTime") else now}
    return [c for c in conditions if c.get("type") != kind] + [new]
