"""The Secret webhook's decision: refuse to delete a Secret that a Shoot still uses (a cache's credentials, a
mirror host's CA bundle).

Answers from the :class:`~extension.references.ReferenceIndex` kept by watches, never by listing Shoots per
request; the refusal names the Shoot, the ``spec.resources`` entry and what to do instead, but only to a caller
known to be the API server (``named``); anyone else learns how many Shoots use it, not which.
"""

from __future__ import annotations

from extension.references import ReferenceIndex, refusal_message


def secret_delete_refusal(index: ReferenceIndex, namespace: str, name: str, named: bool = True) -> str | None:
    users = index.users(namespace, name)
    return refusal_message(namespace, name, users, named) if users else None
