"""Standalone mode's admission policies for Shoots, and whether they are in force.

Who may reference which Secret, and who may configure the nodes' registries through a Shoot, is decided inside
the API server by two ValidatingAdmissionPolicies (``manifests/policies/shoots.yaml``, installed with the chart
and ``manifests/default``): their CEL ``authorizer`` checks ask the API server's own authorizer about the
requesting user, so there is no webhook to call and nothing to forge. The bridge copies Secrets and delivers
Extensions only while both policies and their bindings are in place; otherwise it does nothing new for any Shoot
(what it delivered before stays: nothing is deleted because a policy is missing) and says why on the Shoot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from extension.constants import SHOOT_POLICIES
from extension.runtime.kube import Kube

POLICY_MANIFEST = "manifests/policies/shoots.yaml"
CHECK_SECONDS = 30.0  # how long an answer is reused (each Shoot sync asks)


def binding_problems(name: str, binding: dict[str, Any] | None) -> list[str]:
    """Why ``binding`` does not enforce policy ``name`` on every Shoot (pure)."""
    if binding is None:
        return [f"ValidatingAdmissionPolicyBinding {name} is missing"]
    spec = binding.get("spec") or {}
    problems = []
    if spec.get("policyName") != name:
        problems.append(f"ValidatingAdmissionPolicyBinding {name} binds {spec.get('policyName')!r}, not {name}")
    if "Deny" not in (spec.get("validationActions") or []):
        problems.append(f"ValidatingAdmissionPolicyBinding {name} does not Deny (validationActions "
                        f"{spec.get('validationActions')})")
    match = spec.get("matchResources") or {}
    if any(match.get(k) for k in ("namespaceSelector", "objectSelector", "resourceRules", "excludeResourceRules")) \
            or spec.get("paramRef"):
        problems.append(f"ValidatingAdmissionPolicyBinding {name} applies to fewer Shoots than all")
    return problems


def policy_problems(name: str, policy: dict[str, Any] | None) -> list[str]:
    """Why ``policy`` is not the one that keeps its guarantee (pure)."""
    if policy is None:
        return [f"ValidatingAdmissionPolicy {name} is missing"]
    spec = policy.get("spec") or {}
    problems = []
    if spec.get("failurePolicy", "Fail") != "Fail":
        problems.append(f"ValidatingAdmissionPolicy {name} has failurePolicy {spec.get('failurePolicy')}, not Fail")
    if not spec.get("validations"):
        problems.append(f"ValidatingAdmissionPolicy {name} has no validations")
    return problems


class PolicyCheck:
    """Whether the Shoot policies are in force; an answer is reused for :data:`CHECK_SECONDS`."""

    def __init__(self, kube: Kube, ttl: float = CHECK_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.kube, self.ttl, self.clock = kube, ttl, clock
        self._lock = threading.Lock()
        self._answer: tuple[float, list[str]] | None = None

    def problems(self) -> list[str]:
        with self._lock:
            if self._answer is not None and self.clock() - self._answer[0] < self.ttl:
                return self._answer[1]
        problems: list[str] = []
        for name in SHOOT_POLICIES:
            problems += policy_problems(name, self.kube.get("ValidatingAdmissionPolicy", name))
            problems += binding_problems(name, self.kube.get("ValidatingAdmissionPolicyBinding", name))
        with self._lock:
            self._answer = (self.clock(), problems)
        return problems

    def refusal(self) -> str | None:
        """Why the bridge may not act now, with what to do; None when the policies are in force."""
        problems = self.problems()
        if not problems:
            return None
        return ("the admission policies that decide who may reference which Secret and who may configure the "
                f"nodes are not in force ({'; '.join(problems)}): nothing new is delivered until they are "
                f"(kubectl apply -f {POLICY_MANIFEST}, which the chart and manifests/default install)")
