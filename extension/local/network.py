"""The node's network: a network namespace of its own, so that nothing the node does touches the host's.

The node (containerd, kubelet, kube-proxy, the node agent, the test registries) runs in a network namespace
``rc-node-<id>``. kube-proxy's iptables chains, the Pod bridge, ``net.ipv4.ip_forward`` and the Pods'
routes all live in it, so several clusters (and other sessions' tests) coexist on one machine, and
nothing is left in the host's tables when it is deleted.

- A veth pair links it to the host: ``rcn<id>`` on the host with ``10.200.N.1`` (where kube-apiserver
  listens), ``eth0`` in the namespace with ``10.200.N.2`` (the node's InternalIP, where the kubelet
  serves). ``N`` is picked so that no other link on the host uses it.
- A bridge ``rcbr0`` with ``10.244.0.1/24`` is the Pods' gateway (the CNI bridge plugin takes it over);
  Pods get addresses from ``10.244.0.16`` up. ``10.244.0.2`` .. ``10.244.0.15`` are for the test
  registries (upstreams as IP literals on the node's bridge: nothing else on earth has them).
- Nothing routes off the machine: the namespace's default route points into a veth pair that ends in the
  namespace itself (``void0``), and chain ``RC-EGRESS`` (mangle POSTROUTING) counts and drops every packet
  sent there, by a node process or by a Pod, and every packet a Pod sends towards the host link.
  :meth:`NodeNetwork.egress` reports what was counted, with the connections conntrack saw, so tests can
  assert that nothing tried to leave (a DNS query, a fallback to a public registry). Pods may answer what
  reached them (conntrack's ESTABLISHED) and open connections to one place on the host: kube-apiserver's port
  (:meth:`NodeNetwork.allow_apiserver`; the ``kubernetes`` Service leads there).
- The host reaches the Pods and the Services through the node: routes for ``10.244.0.0/24`` and
  ``10.0.0.0/24`` via the node's end of the link, added before anything starts, so that kube-apiserver
  calls a webhook behind its Service through kube-proxy in the node, as a control plane host does. Without
  them those addresses take the host's default route, off the machine. The host's side is guarded too: chain
  ``RC-HOST-<id>`` (mangle OUTPUT) counts and drops every packet for those networks that would leave by any
  other link (counted in :meth:`NodeNetwork.egress`). The routes are one host's: one cluster at a time has
  them (a second one is refused, naming the first).
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

POD_CIDR = "10.244.0.0/24"
BRIDGE = "rcbr0"
BRIDGE_IP = "10.244.0.1"
POD_RANGE_START = "10.244.0.16"
POD_RANGE_END = "10.244.0.254"
BRIDGE_MAC = "02:00:0a:f4:00:01"  # locally administered, from the gateway's address
REGISTRY_IPS = [f"10.244.0.{i}" for i in range(2, 16)]  # for test registries: upstreams on the bridge
EGRESS_CHAIN = "RC-EGRESS"
HOST_CHAIN = "RC-HOST-{}"  # on the host: what heads for the node's networks by another link
SERVICES_CHAIN = "RC-UNPROGRAMMED-SERVICES"
SERVICE_CIDR = SERVICE_CLUSTER_IP_RANGE
_LOCK = Path("/run/registry-cache-node-network.lock")
_LINK_NET = "10.200.{}.0/24"
_LINK_LOCAL_MULTICAST = ipaddress.ip_network("224.0.0.0/24")


@dataclass
class Egress:
    packets: int
    connections: list[str]
    unprogrammed_services: list[str]
    host_packets: int = 0  # sent by the host towards the Pod or Service network, but not through the node

    def __str__(self) -> str:
        conns = "\n".join(f"  {c}" for c in self.connections) or "  (conntrack saw none)"
        host = f"; {self.host_packets} packet(s) of the host headed for the node's networks by another link" \
            if self.host_packets else ""
        return f"{self.packets} packet(s) tried to leave the node{host}:\n{conns}"


class NodeNetwork:
    def __init__(self, cluster_id: str | None = None):
        self.id = cluster_id or secrets.token_hex(3)
        self.netns = f"rc-node-{self.id}"
        self.host_if = f"rcn{self.id}"
        self.host_ip: str | None = None
        self.node_ip: str | None = None
        self.created = False
        self.host_chain = HOST_CHAIN.format(self.id)
        self._host_guard = False

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
        for tool in ("ip", "nsenter", "iptables"):
            if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":")
                       + ["/usr/sbin", "/sbin"]):
                raise ClusterError(f"{tool} not found: hack/e2e-deps.sh installs what the node needs")
        _LOCK.parent.mkdir(parents=True, exist_ok=True)
        with open(_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = set(re.findall(r"inet 10\.200\.(\d+)\.", run(["ip", "-4", "-o", "addr"]).stdout))
            free = [n for n in range(1, 255) if str(n) not in used]
            if not free:
                raise ClusterError("no free 10.200.N.0/24 link network on this host")
            n = free[int(self.id, 16) % len(free)]
            link = ipaddress.ip_network(_LINK_NET.format(n))
            self.host_ip, self.node_ip = str(link[1]), str(link[2])
            run(["ip", "netns", "add", self.netns])
            self.created = True
            run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", f"{self.host_if}n"])
            run(["ip", "link", "set", f"{self.host_if}n", "netns", self.netns])
            run(["ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if])
            run(["ip", "link", "set", self.host_if, "up"])
            self._route_node_networks()
        self.ip("link", "set", "lo", "up")
        self.ip("link", "set", f"{self.host_if}n", "name", "eth0")
        self.ip("addr", "add", f"{self.node_ip}/24", "dev", "eth0")
        self.ip("link", "set", "eth0", "up")
        # the Pods' bridge, with the gateway and the test registries' addresses
        # with an address of its own: a bridge without one takes the lowest of its ports' (the Pods' veths), so
        # it changes when a Pod goes, and Pods that still have the old one for the gateway or a registry send
        # into the void until their neighbour entry expires (about 30 s: a cache's first request to its upstream
        # after another Pod was deleted hung for its whole dial timeout)
        self.ip("link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge")
        self.ip("addr", "add", f"{BRIDGE_IP}/24", "dev", BRIDGE)
        for address in REGISTRY_IPS:
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
        self.iptables("-t", "mangle", "-A", EGRESS_CHAIN, "-j", "DROP")
        # A ClusterIP kube-proxy has not programmed (yet, or any more: a Service just made or deleted, probed
        # by the node agent or containerd in that moment) also takes the default route; such a packet is
        # addressed to no host anywhere: counted apart (unprogrammed_services), dropped, not egress.
        self.iptables("-t", "mangle", "-N", SERVICES_CHAIN)
        self.iptables("-t", "mangle", "-A", SERVICES_CHAIN, "-m", "recent", "--set", "--rdest", "--name", "rc-services")
        self.iptables("-t", "mangle", "-A", SERVICES_CHAIN, "-j", "DROP")
        # what answers a connection made from outside (kube-apiserver calling a webhook Pod) goes back
        self.iptables("-t", "mangle", "-A", "POSTROUTING", "-o", "eth0", "-m", "conntrack", "--ctstate",
                      "ESTABLISHED,RELATED", "-j", "RETURN")
        self.iptables("-t", "mangle", "-A", "POSTROUTING", "-o", "void0", "-d", SERVICE_CIDR, "-j", SERVICES_CHAIN)
        self.iptables("-t", "mangle", "-A", "POSTROUTING", "-o", "void0", "-j", EGRESS_CHAIN)
        self.iptables("-t", "mangle", "-A", "POSTROUTING", "-o", "eth0", "-s", POD_CIDR, "-j", EGRESS_CHAIN)
        self.iptables("-t", "mangle", "-A", "POSTROUTING", "-o", "eth0", "!", "-d", self.host_ip, "-j", EGRESS_CHAIN)

    def _route_node_networks(self) -> None:
        """The host's routes to the Pod and Service networks through the node, and the guard behind them (called
        under the lock, with the link up)."""
        held = [line for cidr in (POD_CIDR, SERVICE_CIDR)
                for line in run(["ip", "-4", "route", "show", "exact", cidr]).stdout.splitlines() if line.strip()]
        if held:
            raise ClusterError("another local cluster holds the host's routes to the Pod and Service networks ("
                               + "; ".join(held) + "): one cluster at a time on a host (stop it, or let the next "
                               "start sweep it if its starter is gone)")
        for cidr in (POD_CIDR, SERVICE_CIDR):
            run(["ip", "route", "add", cidr, "via", str(self.node_ip), "dev", self.host_if])
        run(["iptables", "-w", "5", "-t", "mangle", "-N", self.host_chain])
        self._host_guard = True
        run(["iptables", "-w", "5", "-t", "mangle", "-A", self.host_chain, "-j", "DROP"])
        for cidr in (POD_CIDR, SERVICE_CIDR):
            run(["iptables", "-w", "5", "-t", "mangle", "-I", "OUTPUT", "-d", cidr, "!", "-o", self.host_if,
                 "-j", self.host_chain])

    def allow_apiserver(self, port: int) -> None:
        """Pods may open connections to kube-apiserver on the host (and nothing else there)."""
        self.iptables("-t", "mangle", "-I", "POSTROUTING", "1", "-o", "eth0", "-d", str(self.host_ip), "-p", "tcp",
                      "--dport", str(port), "-j", "RETURN")

    def bridge_address(self) -> str:
        """The Pods' bridge's link-layer address now (it must stay :data:`BRIDGE_MAC`)."""
        out = run(self.argv(["ip", "-o", "link", "show", BRIDGE])).stdout
        return out.split("link/ether", 1)[1].split()[0] if "link/ether" in out else ""

    def reset_egress(self) -> None:
        """Start counting anew (each test asserts on what happened during itself)."""
        for chain, name in ((EGRESS_CHAIN, "rc-egress"), (SERVICES_CHAIN, "rc-services")):
            self.iptables("-t", "mangle", "-Z", chain)
            run(self.argv(["sh", "-c", f"echo / > /proc/net/xt_recent/{name}"]), check=False)
        if self._host_guard:
            run(["iptables", "-w", "5", "-t", "mangle", "-Z", self.host_chain], check=False)

    def egress(self) -> Egress:
        """What tried to leave the node so far (packets dropped by RC-EGRESS, and conntrack's entries whose
        destination is neither the node, its Pods, its registries nor the host end of its link)."""
        out = self.iptables("-t", "mangle", "-L", EGRESS_CHAIN, "-v", "-n", "-x")
        packets = 0
        for line in out.splitlines()[2:]:
            cols = line.split()
            if cols and cols[0].isdigit():
                packets += int(cols[0])
        conns = []
        recent = run(self.argv(["cat", "/proc/net/xt_recent/rc-egress"]), check=False).stdout
        for line in recent.splitlines():
            m = re.match(r"src=(\S+)", line)
            if m:
                conns.append(f"to {m.group(1)}")
        services = []
        for line in run(self.argv(["cat", "/proc/net/xt_recent/rc-services"]), check=False).stdout.splitlines():
            m = re.match(r"src=(\S+)", line)
            if m:
                services.append(m.group(1))
        res = run(self.argv(["conntrack", "-L", "-o", "extended"]), check=False)
        local = ipaddress.ip_network(POD_CIDR)
        for line in res.stdout.splitlines():
            m = re.search(r"dst=(\S+)", line)
            if not m:
                continue
            try:
                dst = ipaddress.ip_address(m.group(1))
            except ValueError:
                continue
            if dst in local or dst.is_loopback or str(dst) in (self.host_ip, self.node_ip) \
                    or dst in ipaddress.ip_network(SERVICE_CIDR) or dst in _LINK_LOCAL_MULTICAST:
                continue  # (link-local multicast, e.g. the bridge's IGMP reports: never forwarded off the link)
            conns.append(line.strip())
        return Egress(packets, conns, services, self._host_packets())

    def _host_packets(self) -> int:
        if not self._host_guard:
            return 0
        out = run(["iptables", "-w", "5", "-t", "mangle", "-L", self.host_chain, "-v", "-n", "-x"], check=False).stdout
        rows = (line.split() for line in out.splitlines()[2:])
        return sum(int(cols[0]) for cols in rows if cols and cols[0].isdigit())

    def teardown(self) -> None:
        if self._host_guard:  # the routes go with the link; the host's chain and its jumps are ours to remove
            remove_host_chain(self.host_chain)
            self._host_guard = False
        if self.created:
            run(["ip", "netns", "del", self.netns], check=False)
            run(["ip", "link", "del", self.host_if], check=False)  # gone with the namespace's end, normally
            self.created = False


def remove_host_chain(chain: str) -> None:
    """Remove a cluster's guard chain from the host's mangle table, and the OUTPUT rules that jump to it."""
    out = run(["iptables", "-w", "5", "-t", "mangle", "-S", "OUTPUT"], check=False).stdout
    for line in out.splitlines():
        if line.startswith("-A OUTPUT ") and line.endswith(f"-j {chain}"):
            run(["iptables", "-w", "5", "-t", "mangle", "-D", *line.split()[1:]], check=False)
    run(["iptables", "-w", "5", "-t", "mangle", "-F", chain], check=False)
    run(["iptables", "-w", "5", "-t", "mangle", "-X", chain], check=False)
