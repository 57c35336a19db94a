"""The local cluster's networks: each node in a network namespace of its own, the nodes and the host on one
link network of their own, so that nothing the cluster does touches the host's tables but a few routes.

- **The fabric**: a network namespace ``rc-fab-<id>`` holding a bridge, a switch between the host and the nodes.
  The host's end ``rcn<id>`` has ``10.200.N.1/24`` (where kube-apiserver listens), node *i* ``10.200.N.(i+2)``
  on its ``eth0`` (its InternalIP, where its kubelet serves). ``N`` is picked so that no other link on the host
  uses it.
- **A node** (``rc-node-<id>`` for the first, ``rc-node-<id>-<i>`` for the others) runs containerd, the kubelet,
  kube-proxy, the node agent and the cluster's image registry. Its Pods' bridge ``rcbr0`` has ``10.244.i.1/24``
  (Pods from ``10.244.i.16``); on the first node ``10.244.0.2`` .. ``10.244.0.15`` are for the test registries
  (upstreams as IP literals on the node's bridge: nothing else on earth has them). Each node routes the other
  nodes' Pod networks through their ``eth0`` address: one Pod network, ``10.244.0.0/16``.
- **Nothing routes off the machine**: a node's default route points into a veth pair that ends in the node itself
  (``void0``), and chain ``RC-EGRESS`` (mangle POSTROUTING) counts and drops every packet sent there, by a node
  process or by a Pod, and every packet that would leave by ``eth0`` for anything but the Pod network, the link
  network (from the node itself) or, from a Pod, kube-apiserver's port on the host
  (:meth:`NodeNetwork.allow_apiserver`; the ``kubernetes`` Service leads there); what answers a connection made
  from outside (conntrack's ESTABLISHED) goes back. :meth:`NodeNetwork.egress` reports what was counted, with
  the connections conntrack saw, so tests can assert that nothing tried to leave (a DNS query, a fallback to a
  public registry).
- **The host reaches the Pods and the Services through the nodes**: a route per node's Pod network and one for
  ``10.0.0.0/24`` via the first node, added with the fabric, before anything starts, so that kube-apiserver
  calls a webhook behind its Service through kube-proxy in a node, as a control plane host does. Without them
  those addresses take the host's default route, off the machine. The host's side is guarded too: chain
  ``RC-HOST-<id>`` (mangle OUTPUT) counts and drops every packet for those networks that would leave by any other
  link (:meth:`Fabric.host_packets`). The routes are one host's: one cluster at a time has them (a second one is
  refused, naming the first).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from extension.local.controlplane import SERVICE_CLUSTER_IP_RANGE
from extension.local.procs import ClusterError, run

POD_NETWORK = "10.244.0.0/16"  # every node's Pods: kube-proxy's clusterCIDR
BRIDGE = "rcbr0"
REGISTRY_IPS = [f"10.244.0.{i}" for i in range(2, 16)]  # for test registries: upstreams on the first node's bridge
EGRESS_CHAIN = "RC-EGRESS"
HOST_CHAIN = "RC-HOST-{}"  # on the host: what heads for the cluster's networks by another link
SERVICES_CHAIN = "RC-UNPROGRAMMED-SERVICES"
SERVICE_CIDR = SERVICE_CLUSTER_IP_RANGE
MAX_NODES = 16
_LOCK = Path("/run/registry-cache-node-network.lock")
_LINK_NET = "10.200.{}.0/24"
_LINK_LOCAL_MULTICAST = ipaddress.ip_network("224.0.0.0/24")


def pod_cidr(index: int) -> str:
    """Node ``index``'s Pod network."""
    return f"10.244.{index}.0/24"


def bridge_ip(index: int) -> str:
    """Node ``index``'s Pods' gateway."""
    return f"10.244.{index}.1"


def pod_range(index: int) -> tuple[str, str]:
    return f"10.244.{index}.16", f"10.244.{index}.254"


def bridge_mac(index: int) -> str:
    """Locally administered, from the gateway's address: fixed, see :meth:`NodeNetwork.setup`."""
    return f"02:00:0a:f4:{index:02x}:01"


# the first node's, as one node had them
POD_CIDR = pod_cidr(0)
BRIDGE_IP = bridge_ip(0)
BRIDGE_MAC = bridge_mac(0)


@dataclass
class Egress:
    packets: int
    connections: list[str]
    unprogrammed_services: list[str]
    host_packets: int = 0  # sent by the host towards the Pod or Service network, but not through the nodes

    def __str__(self) -> str:
        conns = "\n".join(f"  {c}" for c in self.connections) or "  (conntrack saw none)"
        host = f"; {self.host_packets} packet(s) of the host headed for the cluster's networks by another link" \
            if self.host_packets else ""
        return f"{self.packets} packet(s) tried to leave the nodes{host}:\n{conns}"

    def __add__(self, other: Egress) -> Egress:
        return Egress(self.packets + other.packets, self.connections + other.connections,
                      self.unprogrammed_services + other.unprogrammed_services, self.host_packets + other.host_packets)


def _tools() -> None:
    for tool in ("ip", "nsenter", "iptables"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":")
                   + ["/usr/sbin", "/sbin"]):
            raise ClusterError(f"{tool} not found: hack/e2e-deps.sh installs what the node needs")


def _counted(out: str) -> int:
    """The packets an ``iptables -L -v -x`` listing of one chain counted."""
    rows = (line.split() for line in out.splitlines()[2:])
    return sum(int(cols[0]) for cols in rows if cols and cols[0].isdigit())


class Fabric:
    """The link network of one cluster: the host and its nodes on a bridge in a namespace of its own; the host's
    routes to the Pod and Service networks and the guard behind them."""

    def __init__(self, cluster_id: str | None = None):
        self.id = cluster_id or secrets.token_hex(3)
        self.netns = f"rc-fab-{self.id}"
        self.host_if = f"rcn{self.id}"
        self.host_chain = HOST_CHAIN.format(self.id)
        self.subnet: ipaddress.IPv4Network | None = None
        self.created = False
        self._host_guard = False

    @property
    def host_ip(self) -> str:
        assert self.subnet is not None
        return str(self.subnet[1])

    def node_ip(self, index: int) -> str:
        assert self.subnet is not None
        return str(self.subnet[index + 2])

    def setup(self) -> None:
        """The namespace and its bridge, the host's end of it, and the host's guard (under a lock, so that two
        clusters starting at once pick different link networks and only one gets the routes)."""
        _tools()
        _LOCK.parent.mkdir(parents=True, exist_ok=True)
        with open(_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            held = [line for cidr in (POD_NETWORK, POD_CIDR, SERVICE_CIDR)
                    for line in run(["ip", "-4", "route", "show", "exact", cidr]).stdout.splitlines() if line.strip()]
            if held:
                raise ClusterError("another local cluster holds the host's routes to the Pod and Service networks ("
                                   + "; ".join(held) + "): one cluster at a time on a host (stop it, or let the next "
                                   "start sweep it if its starter is gone)")
            used = set(re.findall(r"inet 10\.200\.(\d+)\.", run(["ip", "-4", "-o", "addr"]).stdout))
            free = [n for n in range(1, 255) if str(n) not in used]
            if not free:
                raise ClusterError("no free 10.200.N.0/24 link network on this host")
            self.subnet = ipaddress.IPv4Network(_LINK_NET.format(free[int(self.id, 16) % len(free)]))
            run(["ip", "netns", "add", self.netns])
            self.created = True
            run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
            run(["ip", "-n", self.netns, "link", "add", "br0", "type", "bridge"])
            run(["ip", "-n", self.netns, "link", "set", "br0", "up"])
            run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "fab", "netns", self.netns])
            run(["ip", "-n", self.netns, "link", "set", "fab", "master", "br0", "up"])
            run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if])
            run(["ip", "link", "set", self.host_if, "up"])
            run(["ip", "route", "add", SERVICE_CIDR, "via", self.node_ip(0), "dev", self.host_if, "onlink"])
            run(["iptables", "-w", "5", "-t", "mangle", "-N", self.host_chain])
            self._host_guard = True
            run(["iptables", "-w", "5", "-t", "mangle", "-A", self.host_chain, "-j", "DROP"])
            for cidr in (POD_NETWORK, SERVICE_CIDR):
                run(["iptables", "-w", "5", "-t", "mangle", "-I", "OUTPUT", "-d", cidr, "!", "-o", self.host_if,
                     "-j", self.host_chain])

    def attach(self, node: NodeNetwork) -> None:
        """Plug a node into the bridge (its ``eth0``) and route the host to its Pods through it."""
        assert self.subnet is not None
        outside, inside = f"rcv{self.id}{node.index}", f"rcw{self.id}{node.index}"
        run(["ip", "link", "add", outside, "type", "veth", "peer", "name", inside])
        run(["ip", "link", "set", outside, "netns", self.netns])
        run(["ip", "-n", self.netns, "link", "set", outside, "master", "br0", "up"])
        run(["ip", "link", "set", inside, "netns", node.netns])
        node.ip("link", "set", inside, "name", "eth0")
        node.ip("addr", "add", f"{node.node_ip}/{self.subnet.prefixlen}", "dev", "eth0")
        node.ip("link", "set", "eth0", "up")
        run(["ip", "route", "replace", pod_cidr(node.index), "via", str(node.node_ip), "dev", self.host_if])

    def detach(self, node: NodeNetwork) -> None:
        """The host's route to a node's Pods goes with it (the node's link goes with its namespace)."""
        run(["ip", "route", "del", pod_cidr(node.index)], check=False)

    def host_packets(self) -> int:
        if not self._host_guard:
            return 0
        return _counted(run(["iptables", "-w", "5", "-t", "mangle", "-L", self.host_chain, "-v", "-n", "-x"],
                            check=False).stdout)

    def reset(self) -> None:
        if self._host_guard:
            run(["iptables", "-w", "5", "-t", "mangle", "-Z", self.host_chain], check=False)

    def teardown(self) -> None:
        if self._host_guard:  # the routes go with the link; the host's chain and its jumps are ours to remove
            remove_host_chain(self.host_chain)
            self._host_guard = False
        if self.created:
            run(["ip", "link", "del", self.host_if], check=False)
            run(["ip", "netns", "del", self.netns], check=False)
            self.created = False


class NodeNetwork:
    """One node's network namespace, its Pods' bridge, its void and its egress count; plugged into ``fabric``."""

    def __init__(self, fabric: Fabric, index: int = 0):
        if not 0 <= index < MAX_NODES:
            raise ValueError(f"a node index from 0 to {MAX_NODES - 1}, not {index}")
        self.fabric, self.index, self.id = fabric, index, fabric.id
        self.netns = f"rc-node-{self.id}" if index == 0 else f"rc-node-{self.id}-{index}"
        self.created = False

    @property
    def host_ip(self) -> str:
        return self.fabric.host_ip

    @property
    def node_ip(self) -> str:
        return self.fabric.node_ip(self.index)

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the node's network namespace (and nothing else: same mounts, same PIDs)."""
        return ["nsenter", f"--net={self.netns_path}", "--", *argv]

    def ip(self, *args: str) -> None:
        run(["ip", "-n", self.netns, *args])

    def iptables(self, *args: str, check: bool = True) -> str:
        return run(self.argv(["iptables", "-w", "5", *args]), check=check).stdout

    def setup(self) -> None:
        _tools()
        run(["ip", "netns", "add", self.netns])
        self.created = True
        self.ip("link", "set", "lo", "up")
        self.fabric.attach(self)
        # the Pods' bridge, with the gateway (and on the first node the test registries' addresses), with an
        # address of its own: a bridge without one takes the lowest of its ports' (the Pods' veths), so it
        # changes when a Pod goes, and Pods that still have the old one for the gateway or a registry send into
        # the void until their neighbour entry expires (about 30 s: a cache's first request to its upstream after
        # another Pod was deleted hung for its whole dial timeout)
        self.ip("link", "add", BRIDGE, "address", bridge_mac(self.index), "type", "bridge")
        self.ip("addr", "add", f"{bridge_ip(self.index)}/24", "dev", BRIDGE)
        for address in REGISTRY_IPS if self.index == 0 else []:
            self.ip("addr", "add", f"{address}/32", "dev", BRIDGE)
        self.ip("link", "set", BRIDGE, "up")
        # the void: the default route goes nowhere but through our counting DROP
        self.ip("link", "add", "void0", "type", "veth", "peer", "name", "void1")
        self.ip("link", "set", "void0", "up")
        self.ip("link", "set", "void1", "up")
        self.ip("route", "add", "default", "dev", "void0")
        run(self.argv(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]))
        # In POSTROUTING, where the output device is the one after kube-proxy's DNAT rerouted the packet
        # (OUTPUT still sees the route before it: every connection to a ClusterIP would match void0 there).
        # mangle runs before nat's MASQUERADE, so a Pod's packet still has the Pod's address.
        self.iptables("-t", "mangle", "-N", EGRESS_CHAIN)
        # remember where they went (xt_recent by destination, per namespace: /proc/net/xt_recent/rc-egress)
        self.iptables("-t", "mangle", "-A", EGRESS_CHAIN, "-m", "recent", "--set", "--rdest", "--name", "rc-egress")
        # ... and who sent them (a Pod's address, or the node's own)
        self.iptables("-t", "mangle", "-A", EGRESS_CHAIN, "-m", "recent", "--set", "--rsource", "--name",
                      "rc-egress-from")
        self.iptables("-t", "mangle", "-A", EGRESS_CHAIN, "-j", "DROP")
        # A ClusterIP kube-proxy has not programmed (yet, or any more: a Service just made or deleted, probed
        # by the node agent or containerd in that moment) also takes the default route; such a packet is
        # addressed to no host anywhere: counted apart (unprogrammed_services), dropped, not egress.
        self.iptables("-t", "mangle", "-N", SERVICES_CHAIN)
        self.iptables("-t", "mangle", "-A", SERVICES_CHAIN, "-m", "recent", "--set", "--rdest", "--name", "rc-services")
        self.iptables("-t", "mangle", "-A", SERVICES_CHAIN, "-j", "DROP")
        post = ("-t", "mangle", "-A", "POSTROUTING")
        # what answers a connection made from outside (kube-apiserver calling a webhook Pod) goes back
        self.iptables(*post, "-o", "eth0", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN")
        self.iptables(*post, "-o", "eth0", "-d", POD_NETWORK, "-j", "RETURN")  # the other nodes' Pods
        subnet = str(self.fabric.subnet)
        self.iptables(*post, "-o", "eth0", "-s", self.node_ip, "-d", subnet, "-j", "RETURN")  # the node: host, nodes
        self.iptables(*post, "-o", "void0", "-d", SERVICE_CIDR, "-j", SERVICES_CHAIN)
        self.iptables(*post, "-o", "void0", "-j", EGRESS_CHAIN)
        self.iptables(*post, "-o", "eth0", "-j", EGRESS_CHAIN)

    def route_to(self, other: NodeNetwork) -> None:
        """This node reaches ``other``'s Pods through ``other``'s ``eth0``."""
        self.ip("route", "replace", pod_cidr(other.index), "via", other.node_ip, "dev", "eth0")

    def allow_apiserver(self, port: int) -> None:
        """Pods may open connections to kube-apiserver on the host (and nothing else there)."""
        self.iptables("-t", "mangle", "-I", "POSTROUTING", "1", "-o", "eth0", "-d", str(self.host_ip), "-p", "tcp",
                      "--dport", str(port), "-j", "RETURN")

    def bridge_address(self) -> str:
        """The Pods' bridge's link-layer address now (it must stay :func:`bridge_mac`)."""
        out = run(self.argv(["ip", "-o", "link", "show", BRIDGE])).stdout
        return out.split("link/ether", 1)[1].split()[0] if "link/ether" in out else ""

    def reset_egress(self) -> None:
        """Start counting anew (each test asserts on what happened during itself)."""
        for chain in (EGRESS_CHAIN, SERVICES_CHAIN):
            self.iptables("-t", "mangle", "-Z", chain)
        for name in ("rc-egress", "rc-egress-from", "rc-services"):
            run(self.argv(["sh", "-c", f"echo / > /proc/net/xt_recent/{name}"]), check=False)

    def egress(self) -> Egress:
        """What tried to leave the node so far (packets dropped by RC-EGRESS, and conntrack's entries whose
        destination is neither the cluster's Pods, its registries, its Services nor its link network)."""
        packets = _counted(self.iptables("-t", "mangle", "-L", EGRESS_CHAIN, "-v", "-n", "-x"))
        conns: list[str] = []
        def recent(name: str) -> list[str]:  # the addresses a recent list holds
            listed = run(self.argv(["cat", f"/proc/net/xt_recent/{name}"]), check=False).stdout
            return [m.group(1) for m in (re.match(r"src=(\S+)", line) for line in listed.splitlines()) if m]

        senders = ", ".join(recent("rc-egress-from"))
        conns.extend(f"{self.netns}: to {to}" + (f" (sent by {senders})" if senders else "")
                     for to in recent("rc-egress"))
        services = recent("rc-services")
        res = run(self.argv(["conntrack", "-L", "-o", "extended"]), check=False)
        local = [ipaddress.ip_network(POD_NETWORK), ipaddress.ip_network(SERVICE_CIDR), _LINK_LOCAL_MULTICAST]
        if self.fabric.subnet is not None:
            local.append(self.fabric.subnet)
        for line in res.stdout.splitlines():
            m = re.search(r"dst=(\S+)", line)
            if not m:
                continue
            try:
                dst = ipaddress.ip_address(m.group(1))
            except ValueError:
                continue
            # (link-local multicast, e.g. the bridge's IGMP reports: never forwarded off the link)
            if dst.is_loopback or any(dst in net for net in local):
                continue
            conns.append(f"{self.netns}: {line.strip()}")
        return Egress(packets, conns, services)

    def teardown(self) -> None:
        if self.created:
            self.fabric.detach(self)
            run(["ip", "netns", "del", self.netns], check=False)  # its end of the link goes with it
            self.created = False


def remove_host_chain(chain: str) -> None:
    """Remove a cluster's guard chain from the host's mangle table, and the OUTPUT rules that jump to it."""
    out = run(["iptables", "-w", "5", "-t", "mangle", "-S", "OUTPUT"], check=False).stdout
    for line in out.splitlines():
        if line.startswith("-A OUTPUT ") and line.endswith(f"-j {chain}"):
            run(["iptables", "-w", "5", "-t", "mangle", "-D", *line.split()[1:]], check=False)
    run(["iptables", "-w", "5", "-t", "mangle", "-F", chain], check=False)
    run(["iptables", "-w", "5", "-t", "mangle", "-X", chain], check=False)
