"""kopf wiring: watch Extensions (and, standalone, Shoots) and hand each event to the controller.

Only ``on.event`` handlers are used: kopf watches, serialises the events of one object and runs the sync
handlers in threads; the Gardener contract in :mod:`.controller` decides what an event means. kopf keeps no
state on the objects (no annotations, no finalizers of its own) and posts no Kubernetes events.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

import kopf

from api.shoot import EXTENSION_TYPE

from .actuator import Actuator, Settings
from .bridge import BRIDGE_LABEL, Bridge
from .controller import Controller
from .kube import Kube

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    controller: Controller
    bridge: Bridge | None
    stop: threading.Event


_runtime: Runtime | None = None


def _plain(body: Any) -> dict[str, Any]:
    """kopf's body as plain dicts and lists."""
    if hasattr(body, "items") and not isinstance(body, (str, bytes)):
        return {k: _plain(v) for k, v in body.items()}
    if isinstance(body, list):
        return [_plain(v) for v in body]
    return body


@kopf.on.startup()
def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False  # logs stay logs: no Events with texts that could carry details
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # not a line per watch event
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


@kopf.on.event("extensions.gardener.cloud", "v1alpha1", "extensions",
               when=lambda spec, **_: spec.get("type") == EXTENSION_TYPE)
def _on_extension(event: dict[str, Any], body: Any, **_: Any) -> None:
    assert _runtime is not None
    ext = _plain(body)
    if event.get("type") == "DELETED":
        _runtime.controller.forget(ext)
        if _runtime.bridge is not None and BRIDGE_LABEL in ((ext.get("metadata") or {}).get("labels") or {}):
            _resync_shoot_of(ext["metadata"]["namespace"])
        return
    _runtime.controller.handle(ext)


def _resync_shoot_of(namespace: str) -> None:
    """The Extension of a bridged Shoot is gone: let the bridge finish the Shoot's cleanup."""
    assert _runtime is not None and _runtime.bridge is not None
    cluster = _runtime.bridge.kube.get("Cluster", namespace)
    shoot_meta = (((cluster or {}).get("spec") or {}).get("shoot") or {}).get("metadata") or {}
    if shoot_meta.get("name"):
        shoot = _runtime.bridge.kube.get("Shoot", shoot_meta["name"], shoot_meta.get("namespace"))
        if shoot is not None:
            log.info("bridge: %s/%s: %s", shoot_meta.get("namespace"), shoot_meta["name"], _runtime.bridge.sync(shoot))


def _on_shoot(event: dict[str, Any], body: Any, **_: Any) -> None:
    assert _runtime is not None and _runtime.bridge is not None
    if event.get("type") == "DELETED":
        return
    shoot = _plain(body)
    result = _runtime.bridge.sync(shoot)
    if result != "nothing":
        log.info("bridge: %s/%s: %s", shoot["metadata"]["namespace"], shoot["metadata"]["name"], result)


@kopf.on.login()
def _login(**_: Any) -> kopf.ConnectionInfo:
    """kopf talks to the API server with exactly the credentials of the controller's own client."""
    assert _runtime is not None
    cfg = _runtime.controller.seed.api.configuration
    auth = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken") or ""
    scheme, _, token = auth.partition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file,
        scheme=scheme or None, token=token or None, expiration=None)


def _retry_loop(controller: Controller, stop: threading.Event, interval: float = 1.0) -> None:
    """Runs failed operations again once their backoff has passed."""
    while not stop.wait(interval):
        for namespace, name in controller.retry_due():
            try:
                controller.retry(namespace, name)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("retry of %s/%s failed", namespace, name)


def build_runtime(seed: Kube, shoot_target: Callable[[str], Kube], settings: Settings, standalone: bool,
                  fault: Callable[[str], None] | None = None) -> Runtime:
    global _runtime
    controller = Controller(seed, Actuator(seed, shoot_target, settings, fault=fault))
    bridge = None
    if standalone:
        bridge = Bridge(Kube(seed.api, field_manager="registry-cache-bridge"))
        kopf.on.event("core.gardener.cloud", "v1beta1", "shoots")(_on_shoot)
    _runtime = Runtime(controller, bridge, threading.Event())
    return _runtime


def run(runtime: Runtime, liveness: str | None = None) -> None:
    """Run until stopped (SIGINT/SIGTERM)."""
    retry = threading.Thread(target=_retry_loop, args=(runtime.controller, runtime.stop), daemon=True,
                             name="retry")
    retry.start()
    try:
        kopf.run(clusterwide=True, standalone=True, liveness_endpoint=liveness)
    finally:
        runtime.stop.set()
