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

from api import shoot as shootlib
from api.shoot import EXTENSION_TYPE
from api.v1alpha3 import RegistryStatus

from .actuator import Actuator, Settings
from . import metrics, tls, webhooks
from .bridge import BRIDGE_FINALIZER, BRIDGE_LABEL, Bridge
from .controller import Controller
from .health import HealthLoop
from .kube import Kube
from .protection import Protection
from .references import ReferenceIndex
from .render import containerd_registries

log = logging.getLogger(__name__)


@dataclass
class WebhookSettings:
    listen_address: str
    port: int
    client: Callable[[str], dict[str, Any]]  # clientConfig per hook, see webhooks.url_client/service_client
    hostnames: list[str]  # what the serving certificate is for
    garden: bool = True  # Shoot validation and Secret protection (where Shoots and their Secrets are)
    seed: bool = True  # the OperatingSystemConfig webhook (where the shoot namespaces are)


@dataclass
class Runtime:
    controller: Controller
    bridge: Bridge | None
    stop: threading.Event
    index: ReferenceIndex | None = None
    protection: Protection | None = None
    webhook: WebhookSettings | None = None
    serving: webhooks.ServingCert | None = None


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
    logging.getLogger("kopf.objects").addFilter(_RefusalsAreNotErrors())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    assert _runtime is not None
    hook = _runtime.webhook
    if hook is not None:
        serving = _runtime.serving = webhooks.make_serving_cert(hook.hostnames)
        settings.admission.server = kopf.WebhookServer(
            addr=hook.listen_address, port=hook.port, certfile=str(serving.certfile), pkeyfile=str(serving.keyfile))
        settings.admission.managed = None  # the configuration is ours: service references, selectors, policies
        threading.Thread(target=_register_when_serving, args=(hook, serving), daemon=True,
                         name="webhook-registration").start()


def _register_when_serving(hook: WebhookSettings, serving: webhooks.ServingCert, timeout: float = 60.0) -> None:
    """Register the webhooks only once the server accepts connections: a Shoot webhook with failurePolicy
    Fail that nobody answers yet would refuse every Shoot change in between."""
    import socket
    import time
    assert _runtime is not None
    address = "127.0.0.1" if hook.listen_address in ("0.0.0.0", "::", "") else hook.listen_address
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, hook.port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                log.error("the webhook server on %s:%s did not come up; webhooks not registered", address, hook.port)
                return
            time.sleep(0.2)
    if hook.garden:
        _runtime.controller.seed.apply(webhooks.configuration(serving.ca_pem, hook.client))
    if hook.seed:
        _runtime.controller.seed.apply(webhooks.mutating_configuration(serving.ca_pem, hook.client))
    log.info("admission webhooks serving on %s:%s and registered", hook.listen_address, hook.port)


class _RefusalsAreNotErrors(logging.Filter):
    """A webhook that refuses a request did its job: kopf reports that as an error, we log it ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.getMessage().startswith("Webhook ") and "failed permanently" in record.getMessage())


@kopf.on.cleanup()
def _cleanup(**_: Any) -> None:
    """On a clean shutdown the Shoot webhook goes (failurePolicy Fail must not block Shoots while we are
    away); the Secret webhook stays (it ignores failures, the finalizer covers for it)."""
    assert _runtime is not None
    if _runtime.webhook is not None and _runtime.serving is not None:
        try:
            if _runtime.webhook.garden:
                _runtime.controller.seed.apply(webhooks.configuration(
                    _runtime.serving.ca_pem, _runtime.webhook.client, shoot_hook=False))
            if _runtime.webhook.seed:
                _runtime.controller.seed.delete("MutatingWebhookConfiguration", webhooks.CONFIGURATION_NAME)
        except Exception:  # noqa: BLE001 - shutting down either way
            log.exception("could not remove the Shoot and OperatingSystemConfig webhooks")


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
    assert _runtime is not None
    shoot = _plain(body)
    meta = shoot["metadata"]
    if _runtime.index is not None:
        changed = (_runtime.index.remove(meta["namespace"], meta["name"]) if event.get("type") == "DELETED"
                   else _runtime.index.update(shoot))
        if _runtime.protection is not None:
            for namespace, name in sorted(changed):
                _runtime.protection.sync(namespace, name)
    if event.get("type") == "DELETED" or _runtime.bridge is None:
        return
    result = _runtime.bridge.sync(shoot)
    if result != "nothing":
        log.info("bridge: %s/%s: %s", meta["namespace"], meta["name"], result)


def _validate_shoot(new: Any, old: Any, **_: Any) -> None:
    assert _runtime is not None
    seed = _runtime.controller.seed
    errors = webhooks.shoot_errors(_plain(new), _plain(old) if old else None,
                                   lambda ns, name: seed.get("Secret", name, ns))
    if errors:
        meta = (new or {}).get("metadata") or {}
        log.info("refused Shoot %s/%s: %d errors", meta.get("namespace"), meta.get("name"), len(errors))
        metrics.WEBHOOK_REFUSALS.labels(webhooks.SHOOT_HOOK).inc()
        raise kopf.AdmissionError("\n".join(errors), code=422)


def _protect_secret(old: Any, **_: Any) -> None:
    assert _runtime is not None and _runtime.index is not None
    meta = (old or {}).get("metadata") or {}
    refusal = webhooks.secret_delete_refusal(_runtime.index, meta.get("namespace", ""), meta.get("name", ""))
    if refusal:
        log.info("refused DELETE of Secret %s/%s: in use", meta.get("namespace"), meta.get("name"))
        metrics.WEBHOOK_REFUSALS.labels(webhooks.SECRET_HOOK).inc()
        raise kopf.AdmissionError(refusal, code=403)


def _mutate_osc(body: Any, patch: Any, **_: Any) -> None:
    """Gardener's OperatingSystemConfig ensurer: the caches as containerd registries, and the CA bundle file,
    so that gardener-node-agent writes hosts.toml on every node (skipped for a shoot being deleted or
    hibernated, and until the Extension reports its caches)."""
    assert _runtime is not None
    osc = _plain(body)
    namespace = osc["metadata"]["namespace"]
    seed = _runtime.controller.seed
    cluster = seed.get("Cluster", namespace) or {}
    shoot = (cluster.get("spec") or {}).get("shoot") or {}
    if (shoot.get("metadata") or {}).get("deletionTimestamp") or shootlib.is_hibernated(shoot):
        return
    ext = seed.get("Extension", shootlib.EXTENSION_TYPE, namespace) or {}
    provider_status = (ext.get("status") or {}).get("providerStatus")
    if not provider_status:
        log.warning("OperatingSystemConfig %s/%s: the registry-cache Extension reports no caches yet; unchanged",
                    namespace, osc["metadata"].get("name"))
        return
    status = RegistryStatus.model_validate(provider_status)
    ca_bundle = tls.ca_bundle(seed, namespace) if status.ca_secret_name else None
    new_spec = webhooks.osc_patch(osc, containerd_registries(status), ca_bundle)
    if new_spec is not None:
        patch.spec["criConfig"] = new_spec["criConfig"]
        patch.spec["files"] = new_spec["files"]


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


HEALTH_INTERVAL = 10.0  # seconds between the caches' health checks (condition SystemComponentsHealthy)


def _retry_loop(controller: Controller, stop: threading.Event, interval: float = 1.0) -> None:
    """Runs failed operations again once their backoff has passed."""
    while not stop.wait(interval):
        for namespace, name in controller.retry_due():
            try:
                controller.retry(namespace, name)
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("retry of %s/%s failed", namespace, name)


def build_runtime(seed: Kube, shoot_target: Callable[[str], Kube], settings: Settings, standalone: bool,
                  fault: Callable[[str], None] | None = None, webhook: WebhookSettings | None = None) -> Runtime:
    """Wire the parts: the Extension controller always; with ``standalone`` the bridge and the protection
    of Secrets in use (gardenlet and Gardener do both otherwise); with ``webhook`` the admission webhooks."""
    global _runtime
    controller = Controller(seed, Actuator(seed, shoot_target, settings, fault=fault))
    runtime = _runtime = Runtime(controller, None, threading.Event(), webhook=webhook)
    if standalone:
        runtime.bridge = Bridge(Kube(seed.api, field_manager="registry-cache-bridge"))
    if standalone or (webhook is not None and webhook.garden):
        runtime.index = ReferenceIndex(cleanup_finalizer=BRIDGE_FINALIZER if standalone else None)
        runtime.index.prime(seed.list("Shoot"))
        kopf.on.event("core.gardener.cloud", "v1beta1", "shoots")(_on_shoot)
    if standalone:
        runtime.protection = Protection(Kube(seed.api, field_manager="registry-cache-protection"), runtime.index)
        runtime.protection.resync()
    if webhook is not None and webhook.garden:
        kopf.on.validate("core.gardener.cloud", "v1beta1", "shoots", id=webhooks.SHOOT_HOOK,
                         operations=["CREATE", "UPDATE"])(_validate_shoot)
        kopf.on.validate("", "v1", "secrets", id=webhooks.SECRET_HOOK, operations=["DELETE"],
                         ignore_failures=True)(_protect_secret)
    if webhook is not None and webhook.seed:
        kopf.on.mutate("extensions.gardener.cloud", "v1alpha1", "operatingsystemconfigs", id=webhooks.OSC_HOOK,
                       operations=["CREATE", "UPDATE"])(_mutate_osc)
    return runtime


def run(runtime: Runtime, liveness: str | None = None) -> None:
    """Run until stopped (SIGINT/SIGTERM)."""
    retry = threading.Thread(target=_retry_loop, args=(runtime.controller, runtime.stop), daemon=True,
                             name="retry")
    retry.start()
    actuator = runtime.controller.actuator
    health = HealthLoop(actuator.seed, actuator.shoot_target, interval=HEALTH_INTERVAL)
    threading.Thread(target=health.run, args=(runtime.stop,), daemon=True, name="health").start()
    try:
        kopf.run(clusterwide=True, standalone=True, liveness_endpoint=liveness)
    finally:
        runtime.stop.set()
