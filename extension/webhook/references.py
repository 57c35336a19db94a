"""Who may reference which Secret in a Shoot's ``spec.resources`` (Gardener's ResourceReferenceManager).

When a Shoot is created or its ``spec.resources`` change, the requesting user must be allowed to ``get`` every
Secret listed there (a SubjectAccessReview per Secret); otherwise the Shoot is refused in Gardener's words:
a Shoot author could otherwise have credentials they cannot read sent to a registry of their choosing.

Without Gardener the standalone bridge copies the Secrets, long after admission. The Shoot mutating webhook
records that the check passed: an HMAC (:func:`resources_record`), with a key kept in a Secret, over the Shoot's
namespace and name and the Secret names it references. The bridge copies only Secrets a valid record covers
(:func:`admitted`): a record cannot be forged or carried to another Shoot or another set of Secrets.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from api import shoot as shootlib

# Gardener's words (plugin/pkg/global/resourcereferencemanager)
NOT_ALLOWED = "shoot cannot reference a resource you are not allowed to read"

CanRead = Callable[[str, str], bool]  # (namespace, Secret name) -> may the requesting user get it


def secret_names(shoot: dict[str, Any]) -> list[str]:
    """The Secrets ``spec.resources`` lists, sorted, without duplicates."""
    out = set()
    for res in shootlib.resources(shoot):
        ref = res.get("resourceRef")
        if isinstance(ref, dict) and ref.get("kind") == "Secret" and isinstance(ref.get("name"), str):
            out.add(ref["name"])
    return sorted(out)


def resources_changed(new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    """A create, or an update whose ``spec.resources`` differ (Gardener checks only then)."""
    return old is None or shootlib.resources(new) != shootlib.resources(old)


def unreadable(shoot: dict[str, Any], can_read: CanRead) -> list[str]:
    """The referenced Secrets the requesting user may not get."""
    namespace = (shoot.get("metadata") or {}).get("namespace") or ""
    return [name for name in secret_names(shoot) if not can_read(namespace, name)]


def refusal(names: list[str], namespace: str, user: str) -> str:
    shown = ", ".join(f"{namespace}/{n}" for n in names[:5]) + (" ..." if len(names) > 5 else "")
    return f'{NOT_ALLOWED}: user "{user[:100]}" may not get Secret {shown} (spec.resources)'


def resources_record(key: bytes, shoot: dict[str, Any]) -> str:
    meta = shoot.get("metadata") or {}
    text = "\n".join([str(meta.get("namespace")), str(meta.get("name")), *secret_names(shoot)])
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def admitted(key: bytes | None, shoot: dict[str, Any], annotation: str) -> bool:
    """Whether the Shoot carries a valid admission record for the Secrets it references now."""
    if key is None:
        return False
    record = ((shoot.get("metadata") or {}).get("annotations") or {}).get(annotation)
    return isinstance(record, str) and hmac.compare_digest(record, resources_record(key, shoot))


def subject_access_review(user_info: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    """A SubjectAccessReview: may this user (as the API server described them) get this Secret."""
    spec: dict[str, Any] = {
        "resourceAttributes": {"namespace": namespace, "verb": "get", "group": "", "version": "v1",
                               "resource": "secrets", "name": name},
        "user": user_info.get("username", ""),
        "groups": list(user_info.get("groups") or []),
    }
    if user_info.get("uid"):
        spec["uid"] = user_info["uid"]
    if user_info.get("extra"):
        spec["extra"] = user_info["extra"]
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "metadata": {}, "spec": spec}
