"""extension/runtime/kube.py keeps its connections through the kubernetes client's public
``connection_pool_maxsize``, and nothing of the product reaches into the client's urllib3 pool or its private
attributes."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from extension.runtime.kube import POOL_SIZE, Kube, api_client

REPO = Path(__file__).resolve().parents[2]


def kubeconfig(tmp_path: Path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}))
    return str(path)


def test_the_client_keeps_pool_size_connections_per_api_server(tmp_path):
    kube = Kube.from_kubeconfig(kubeconfig(tmp_path))
    assert kube.api.configuration.connection_pool_maxsize == POOL_SIZE
    # the client honours it: the pools it makes keep that many connections (what urllib3 is given)
    assert kube.api.rest_client.pool_manager.connection_pool_kw["maxsize"] == POOL_SIZE
    assert api_client(kubeconfig(tmp_path), pool_size=3).configuration.connection_pool_maxsize == 3


def test_no_reaching_into_the_clients_pool_or_private_attributes():
    """Neither the urllib3 pool under the kubernetes client (``rest_client``, ``pool_manager``,
    ``connection_pool_kw``) nor any ``_private`` attribute of an object that is not the code's own (``self``,
    ``cls``, another instance of the same class in its own module, ``os._exit``)."""
    reached = []
    for path in sorted(REPO.glob("extension/**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Attribute):
                continue
            owner = node.value.id if isinstance(node.value, ast.Name) else type(node.value).__name__
            where = f"{path.relative_to(REPO)}:{node.lineno} {owner}.{node.attr}"
            if node.attr in ("rest_client", "pool_manager", "connection_pool_kw"):
                reached.append(where)
            elif node.attr.startswith("_") and not node.attr.startswith("__") and owner not in ("self", "cls"):
                reached.append(where)
    allowed = {"os._exit", "parts._replace",  # the standard library's public names (os._exit, namedtuple)
               "other._lock", "other._reported",  # Kube._like: another Kube
               "cp._stop_quietly"}  # ControlPlane: its own class, in its own module
    assert [r for r in reached if r.split(" ", 1)[1] not in allowed] == []


def test_the_shoots_api_servers_count_as_one_host(tmp_path):
    """Under Gardener every shoot has its API server: rest_client_*'s host label would be one value per Extension
    (1,000 Extensions, 1,000 series per bucket). The clients made from the shoots' kubeconfig Secrets all say
    ``shoots``; the seed's client its API server."""
    import base64

    from extension.controller.shoots import KubeconfigSecret

    data = base64.b64encode(Path(kubeconfig(tmp_path)).read_bytes()).decode()
    seed = Kube.from_kubeconfig(kubeconfig(tmp_path))
    target = KubeconfigSecret(seed, ["gardener"])
    target.read = lambda ns, name: {"metadata": {"uid": ns, "resourceVersion": "1"}, "data": {"kubeconfig": data}}
    assert {target(f"shoot--p--{i}").metrics_host for i in range(3)} == {"shoots"}
    assert seed.metrics_host == "127.0.0.1:6443"
    assert seed.fenced(lambda: True).metrics_host == "127.0.0.1:6443"
