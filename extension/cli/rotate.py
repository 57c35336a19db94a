"""Credential rotation in one command: the six steps of Gardener's docs, done in order and checked.

1. create the next immutable Secret (``<base>-v2``, ``-v3``, ...) with the new credentials, and check it;
2. point the Shoot's ``spec.resources`` entry at it (a JSON patch that first tests the old name);
3. wait until the Shoot is reconciled with it (standalone: the Extension reports Succeeded for the Shoot's
   new generation; under Gardener: the Shoot's own status);
4. delete the old Secret (unless kept), waiting until it is gone.

Nothing is lost on the way: a Secret that does not pass the checks is removed again before anything points
at it, and the old Secret is only deleted once the new one is in use. When the API server cannot be reached
for a while (a refused connection, a timeout), each step is tried again until ``--timeout``: the rotation
resumes where it was once the API server is back; if it stays away, what was done is rolled back as far as
it can be, and the message says what is kept.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any, TypeVar

from api import shoot as shootlib
from api.field import Path
from api.secrets import Credentials, secret_from_manifest, validate_upstream_secret
from extension.cli.credentials import (
    add_source_arguments,
    credentials_from_source,
    next_versioned_name,
    secret_manifest,
)
from extension.cli.errors import CommandFailed, InputError
from extension.constants import (
    EXTENSION_NAME,
    OPERATION_ANNOTATION,
    PROTECTION_FINALIZER,
    SHOOT_GENERATION_ANNOTATION,
    State,
)
from extension.runtime.kube import ApiError, Kube, TransportError

T = TypeVar("T")


class RotationError(CommandFailed):
    """The rotation stopped; the message says what was kept."""


def _reachable(call: Callable[[], T], deadline: float, progress: Callable[[str], None], kept: str) -> T:
    """``call()``, tried again while the API server cannot be reached, until ``deadline``; then a
    RotationError saying ``kept``."""
    said = False
    while True:
        try:
            return call()
        except TransportError as exc:
            if time.monotonic() > deadline:
                raise RotationError(f"{exc.describe()}; gave up: {kept}") from None
            if not said:
                progress(f"the API server cannot be reached ({exc.message}); trying again")
                said = True
            time.sleep(1)


def _extension_state(kube: Kube, shoot: dict[str, Any], generation: int) -> tuple[str, str]:
    """('done'|'failed'|'waiting', detail) for the reconcile of ``generation``."""
    meta = shoot["metadata"]
    seed_ns = shootlib.technical_namespace(shootlib.project_of_namespace(meta["namespace"]), meta["name"])
    ext = kube.get("Extension", EXTENSION_NAME, seed_ns)
    if ext is not None:  # standalone: the bridge and the controller run against this API server
        annotations = ext["metadata"].get("annotations") or {}
        status = ext.get("status") or {}
        last = status.get("lastOperation") or {}
        if annotations.get(SHOOT_GENERATION_ANNOTATION) != str(generation) or \
                annotations.get(OPERATION_ANNOTATION) or \
                status.get("observedGeneration") != ext["metadata"]["generation"]:
            return "waiting", f"Extension {seed_ns}/registry-cache: waiting for the reconcile"
        if last.get("state") == State.SUCCEEDED:
            return "done", f"Extension {seed_ns}/registry-cache: {last.get('description')}"
        if last.get("state") == State.ERROR:
            return "failed", f"Extension {seed_ns}/registry-cache: {(status.get('lastError') or {}).get('description')}"
        return "waiting", f"Extension {seed_ns}/registry-cache: {last.get('state')}"
    current = kube.get("Shoot", meta["name"], meta["namespace"]) or {}
    status = current.get("status") or {}
    last = status.get("lastOperation") or {}
    if status.get("observedGeneration") != generation:
        return "waiting", "Shoot: waiting for the reconcile"
    if last.get("state") == State.SUCCEEDED:
        return "done", "Shoot reconciled"
    if last.get("state") in (State.ERROR, State.FAILED):
        return "failed", f"Shoot: {last.get('description')}"
    return "waiting", f"Shoot: {last.get('state')} {last.get('progress', '')}%"


def referenced_upstreams(shoot: dict[str, Any], reference: str) -> list[str]:
    """The upstreams of the caches that use ``reference`` as secretReferenceName."""
    entry = shootlib.find_registry_cache_extension(shoot)
    caches = (entry.provider_config or {}).get("caches") if entry and isinstance(entry.provider_config, dict) else None
    return [str(c.get("upstream")) for c in caches or []
            if isinstance(c, dict) and c.get("secretReferenceName") == reference]


def rotate(kube: Kube, shoot: dict[str, Any], reference: str, credentials: Credentials,
           keep_old: bool = False, timeout: float = 600.0,
           progress: Callable[[str], None] = lambda _: None) -> str:
    """Rotate the credentials behind ``reference`` of ``shoot`` (as read from the API server); returns the new
    Secret's name."""
    namespace, shoot_name = shoot["metadata"]["namespace"], shoot["metadata"]["name"]
    index = shootlib.resource_index(shoot, reference)
    if index is None:
        names = ", ".join(r.get("name", "?") for r in shootlib.resources(shoot)) or "none"
        raise RotationError(f"Shoot {namespace}/{shoot_name} has no spec.resources entry {reference!r} "
                            f"(entries: {names})")
    ref = shoot["spec"]["resources"][index].get("resourceRef") or {}
    if ref.get("kind") != "Secret":
        raise RotationError(f"spec.resources[{index}] ({reference}) does not refer to a Secret")
    old = ref["name"]
    deadline = time.monotonic() + timeout
    existing = [s["metadata"]["name"] for s in _reachable(lambda: kube.list("Secret", namespace), deadline, progress,
                                                           "nothing was changed")]
    new = next_versioned_name(existing, old)

    # 1. the new Secret, checked before anything points at it
    manifest = secret_manifest(new, namespace, credentials)
    problems = validate_upstream_secret(secret_from_manifest(manifest), Path("secret"), reference)
    if problems:
        raise RotationError("the new credentials are not usable: " + "; ".join(e.detail for e in problems))

    def create() -> None:
        try:
            kube.create(manifest)
        except TransportError:
            if kube.get("Secret", new, namespace) is None:  # (raises again while away) not made: again
                raise
        except ApiError as exc:  # made by an earlier try whose answer was lost: the same data is fine
            current = kube.get("Secret", new, namespace) if exc.conflict else None
            if current is None or current.get("data") != manifest["data"]:
                raise
    _reachable(create, deadline, progress, f"{old} is in use as before; Secret {new} may have been created: "
                                           "delete it if it is there")
    progress(f"created Secret {namespace}/{new} (immutable)")

    def roll_back(why: str) -> RotationError:
        try:
            _reachable(lambda: kube.delete("Secret", new, namespace), time.monotonic() + 30, progress, "")
            return RotationError(f"{why} (Secret {new} removed again; {old} is in use as before)")
        except (RotationError, ApiError):
            return RotationError(f"{why}; {old} is in use as before; Secret {new} could not be removed: delete it")

    # 2. the swap; the test op makes it fail rather than overwrite a concurrent change
    path = f"/spec/resources/{index}/resourceRef/name"

    def swap() -> dict[str, Any]:
        try:
            return kube.patch("Shoot", shoot_name, [{"op": "test", "path": path, "value": old},
                                                    {"op": "replace", "path": path, "value": new}],
                              namespace, merge=False)
        except TransportError:  # did it get through? the Shoot says
            current = kube.get("Shoot", shoot_name, namespace) or {}
            entries = (current.get("spec") or {}).get("resources") or []
            if len(entries) > index and (entries[index].get("resourceRef") or {}).get("name") == new:
                return current
            raise
    try:
        patched = _reachable(swap, deadline, progress, "the Shoot may not refer to the new Secret")
    except RotationError as exc:
        raise roll_back(f"could not point spec.resources entry {reference!r} at {new}: {exc}") from None
    except ApiError as exc:
        raise roll_back(f"could not point spec.resources entry {reference!r} at {new}: {exc.message}") from None
    generation = patched["metadata"]["generation"]
    progress(f"Shoot {namespace}/{shoot_name}: spec.resources entry {reference!r} now refers to {new} "
             f"(generation {generation})")

    # 3. wait for the reconcile with the new credentials
    kept = f"{old} is kept and the Shoot refers to {new}"
    last_detail = ""
    while True:
        state, detail = _reachable(lambda: _extension_state(kube, patched, generation), deadline, progress, kept)
        if detail != last_detail:
            progress(detail)
            last_detail = detail
        if state == "done":
            break
        if state == "failed":
            raise RotationError(f"the reconcile with {new} failed; {old} is kept: {detail}")
        if time.monotonic() > deadline:
            raise RotationError(f"no successful reconcile within {timeout:.0f}s; {kept}")
        time.sleep(1)

    # 4. the old Secret goes (the reference index may need a moment to let the DELETE through)
    if keep_old:
        progress(f"kept Secret {namespace}/{old} (--keep-old)")
        return new
    kept = f"the Shoot uses {new}; delete {old} yourself"
    while True:
        try:
            _reachable(lambda: kube.delete("Secret", old, namespace), deadline, progress, kept)
            break
        except ApiError as exc:
            if exc.status != 403 or time.monotonic() > deadline:
                raise RotationError(f"could not delete {old}: {exc.message}") from None
            time.sleep(1)
    while _reachable(lambda: kube.get("Secret", old, namespace), deadline, progress, kept) is not None:
        if time.monotonic() > deadline:
            raise RotationError(f"Secret {old} is still terminating (finalizer {PROTECTION_FINALIZER}:"
                                " another Shoot may still use it)")
        time.sleep(0.5)
    progress(f"deleted Secret {namespace}/{old}")
    return new


def add_parser(credentials_subparsers: Any) -> None:
    """``registry-cache credentials rotate``."""
    p = credentials_subparsers.add_parser(
        "rotate", help="rotate the credentials behind a Shoot's spec.resources entry, safely",
        description="Creates the next immutable Secret (<base>-v2, -v3, ...) from the new credentials, points "
                    "the Shoot's spec.resources entry at it, waits until the Shoot is reconciled with it, then "
                    "deletes the old Secret (unless --keep-old). Exit 0 done, 1 failed (what was kept is said), "
                    "2 unusable input.")
    p.add_argument("--shoot", required=True, metavar="NAMESPACE/NAME", help="the Shoot, e.g. garden-dev/crazy-botany")
    p.add_argument("--reference", required=True, metavar="REF",
                   help="the spec.resources entry the caches name as secretReferenceName")
    p.add_argument("--upstream", metavar="UPSTREAM",
                   help="which registry's entry to take from a config file (default: the upstream of the cache "
                        "that uses REF)")
    add_source_arguments(p)
    p.add_argument("--keep-old", action="store_true", help="keep the old Secret")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the reconcile (default 600)")
    p.add_argument("--kubeconfig", metavar="K", help="the (garden) cluster (default: in-cluster, then $KUBECONFIG)")
    p.set_defaults(func=cmd_rotate)


def cmd_rotate(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        print(text, flush=True)

    namespace, sep, name = args.shoot.partition("/")
    if not sep or not namespace or not name:
        raise InputError(f"--shoot {args.shoot!r}: expected NAMESPACE/NAME")
    kube = Kube.from_kubeconfig(args.kubeconfig)
    shoot = kube.get("Shoot", name, namespace)
    if shoot is None:
        raise InputError(f"Shoot {namespace}/{name} not found")
    upstreams = [args.upstream] if args.upstream else referenced_upstreams(shoot, args.reference)
    if len(set(upstreams)) != 1:
        raise InputError(f"{len(set(upstreams))} caches use {args.reference!r} "
                         f"({', '.join(sorted(set(upstreams))) or 'none'}): say which entry to take with --upstream")
    credentials, source = credentials_from_source(args, upstreams[0], f"{args.reference} (new)", namespace)
    new = rotate(kube, shoot, args.reference, credentials, keep_old=args.keep_old, timeout=args.timeout,
                 progress=say)
    say(f"done: {args.reference!r} of Shoot {namespace}/{name} now uses Secret {new} (credentials from {source})")
    return 0
