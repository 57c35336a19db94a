"""A real one-node Kubernetes cluster from processes, as Kubernetes' ``hack/local-up-cluster.sh`` runs one.

::

    with LocalCluster(workdir) as cluster:
        cluster.kubeconfig            # admin
        cluster.images.registry       # the cache image the node pulls (give it to the controller's --image)
        cluster.upstream("public")    # a test registry on the node's bridge, TLS from the test CA
        cluster.node_file("/etc/containerd/certs.d/10.244.0.2/hosts.toml")

Processes (logs in ``workdir/logs``):

- on the host: etcd and kube-apiserver (:class:`extension.local.controlplane.LocalControlPlane`, listening on the
  host end of the node's link), kube-controller-manager (with Kubernetes' own host-path provisioner and a
  default StorageClass, so volume claim templates bind) and kube-scheduler;
- in the node's network namespace (:mod:`.network`): containerd (Debian's, with its own config, root, state
  and socket; CRI with ``restrict_oom_score_adj``, a local pause image, ``registry.config_path`` =
  :attr:`LocalCluster.certs_d`, CNI bridge + host-local + portmap + loopback from Debian), the kubelet
  (cgroupfs, its own root, cgroup root, Pod log dir; webhook authn/authz; a ``system:node`` client
  certificate), kube-proxy (iptables), the cluster's image registry and the test upstreams.

Kubernetes' binaries are built from the same module and version (``hack/control-plane-bins.sh``,
``hack/node-bins.sh``), distribution and crane by ``hack/registry-bins.sh``, all cached under
``~/.cache/registry-cache``. Host-wide things it must touch are unique to this cluster (network namespace,
host link, cgroup root ``/rc-node-<id>``) or recorded and restored by :meth:`LocalCluster.stop` (the kernel
sysctls the kubelet sets, ``/var/log/containers`` entries).

Volumes: kube-controller-manager runs as user 65532, so the host-path provisioner's directories
(``/tmp/hostpath_pv/<uuid>``, mode 0750) belong to the user the caches run as: host-path volumes ignore
``fsGroup``, and Kubernetes' provisioner makes root-owned directories that user 65532 cannot write.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from extension.component.certs import KeyPair, generate_ca, generate_server_cert
from extension.local import network as net
from extension.local.controlplane import LocalControlPlane, hack_dir, resolve_bin_dir
from extension.local.images import Images, build_and_push, static_busybox
from extension.local.procs import ClusterError, Proc, run, tail, wait_for
from extension.local.registries import LocalRegistry

log = logging.getLogger(__name__)

NODE_NAME = "local-node"
IMAGE_REGISTRY = "127.0.0.1:5000"  # in the node's network namespace
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")
CGROUP_V1 = Path("/sys/fs/cgroup")
KUBELET_DEVICE_PLUGINS = Path("/var/lib/kubelet/device-plugins")  # hard-coded in the kubelet (pluginapi)
HOSTPATH_PV_ROOT = Path("/tmp/hostpath_pv")  # hard-coded in Kubernetes' host-path provisioner
VOLUME_USER = 65532  # who owns the provisioned volumes: the user the caches run as
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
# WaitForFirstConsumer (as kind's "standard"): the scheduler has the claim provisioned and bound while it
# binds the Pod. With Immediate binding a cache Pod was once left "unschedulable: unbound immediate
# PersistentVolumeClaims" for minutes after its volume was provisioned (the scheduler retried it only late).
_STORAGE_CLASS = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "kubernetes.io/host-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
}


def bins(script: str, progress: Callable[[str], None] | None) -> Path:
    env = dict(os.environ)
    if not shutil.which("go") and Path("/usr/local/go/bin/go").is_file():
        env["PATH"] = "/usr/local/go/bin:" + env.get("PATH", "")
    proc = subprocess.Popen(["bash", str(hack_dir() / script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    err: list[str] = []

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line.rstrip())
            if progress:
                progress(line.rstrip())

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    out = proc.stdout.read() if proc.stdout else ""
    rc = proc.wait()
    t.join()
    if rc != 0:
        raise ClusterError(f"hack/{script} failed ({rc}):\n" + "\n".join(err[-20:]))
    return Path(out.strip().splitlines()[-1])


def node_prerequisites() -> list[str]:
    """What this machine lacks to run the node (empty: it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the node creates a network namespace, cgroups and mounts)")
    for tool in ("containerd", "runc", "iptables", "conntrack", "nsenter", "ip"):
        if not shutil.which(tool) and not Path("/usr/sbin", tool).exists() and not Path("/sbin", tool).exists():
            missing.append(tool)
    if not shutil.which("kubectl"):
        missing.append("kubectl")
    if not any(Path(d, "bridge").is_file() and Path(d, "host-local").is_file() for d in CNI_BIN_DIRS):
        missing.append("the CNI plugins (Debian's containernetworking-plugins)")
    if static_busybox() is None:
        missing.append("a static busybox, the cache image's /bin/sh (Debian's busybox-static)")
    if not (CGROUP_V1 / "memory").is_dir() and not (CGROUP_V1 / "cgroup.controllers").is_file():
        missing.append("cgroups under /sys/fs/cgroup")
    return missing


def install_node_packages() -> bool:
    """Install the Debian packages the node needs (``hack/e2e-deps.sh``: containerd, runc, iptables, conntrack,
    the CNI plugins, busybox-static), saying so, where this process can: root with apt-get. False where it
    cannot or the installation failed (its output says why)."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    print("Installing the Debian packages the local node needs (containerd, runc, iptables, conntrack, "
          "containernetworking-plugins, busybox-static) with apt-get ...", flush=True)
    done = subprocess.run(["bash", str(hack_dir() / "e2e-deps.sh")], text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=900)
    for line in done.stdout.splitlines():
        print(f"  {line}", flush=True)
    return done.returncode == 0


def _client_cert(ca_dir: Path, out: Path, name: str, org: str | None) -> None:
    ca_key = serialization.load_pem_private_key((ca_dir / "client-ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)  # as extension.local.controlplane makes it
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "client-ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = ([x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)] if org else []) + \
        [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(x509.Name(attrs)).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    out.with_suffix(".key").chmod(0o600)
    out.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _kubeconfig(path: Path, server: str, ca_file: Path, cert: Path, key: Path) -> Path:
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority-data": b64(ca_file)}}],
        "users": [{"name": "user", "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
    }))
    path.chmod(0o600)
    return path


PATH_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
# the nodes' containerd: Debian's (1.6: no dial_timeout per host) or 2.x built from its module (hack/containerd-bins.sh)
CONTAINERD_VERSIONS = ("1.6", "2")


class Node:
    """One node of a :class:`LocalCluster`: its network namespace (:class:`~extension.local.network.NodeNetwork`)
    and mount namespace, its image registry (the cluster's images, on ``127.0.0.1:5000`` as every node sees it),
    containerd, the kubelet and kube-proxy.

    Every node sees containerd's hosts directory at the same path, :attr:`LocalCluster.certs_path` (containerd's
    ``config_path``, the node agent DaemonSet's hostPath), as on real nodes: in the node's own mount namespace the
    node's directory (:attr:`certs_d`, on the host) is bind-mounted there. Everything else of the host's file
    system is the same for every node (the mount namespace follows the host's: ``--propagation slave``).
    """

    def __init__(self, cluster: LocalCluster, index: int):
        self.cluster, self.index = cluster, index
        self.name = NODE_NAME if index == 0 else f"{NODE_NAME}-{index}"
        self.network = net.NodeNetwork(cluster.fabric, index)
        self.suffix = "" if index == 0 else f"-{index}"
        self.run_dir = cluster.run_dir if index == 0 else cluster.run_dir / f"n{index}"  # sockets: short paths
        self.workdir = cluster.workdir / ("node" if index == 0 else f"node-{index}")
        self.procs: dict[str, Proc] = {}
        self.registry: LocalRegistry | None = None
        self._cgroup_dirs: list[Path] = []
        self.mount_ns: Path | None = None

    # -- paths ---------------------------------------------------------------------------------------

    @property
    def certs_d(self) -> Path:
        """This node's containerd hosts directory on the host (where the node agent writes ``hosts.toml``)."""
        return self.workdir / "certs.d"

    @property
    def kubelet_root(self) -> Path:
        return self.run_dir / "kubelet"

    @property
    def containerd_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def containerd_log(self) -> Path:
        return self.log("containerd")

    @property
    def cgroup_root(self) -> str:
        return f"/rc-node-{self.cluster.id}{self.suffix}"

    def log(self, name: str) -> Path:
        return self.cluster.logs / f"{name}{self.suffix}.log"

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` run in the node: its network namespace and, once made, its mount namespace."""
        mount = [f"--mount={self.mount_ns}"] if self.mount_ns is not None else []
        return ["nsenter", f"--net={self.network.netns_path}", *mount, "--", *argv]

    def file(self, path: str | Path) -> str | None:
        """A file as this node sees it (its hosts directory at :attr:`LocalCluster.certs_path`), or None."""
        path = Path(path)
        certs = self.cluster.certs_path
        if path == certs or certs in path.parents:
            path = self.certs_d / path.relative_to(certs)
        try:
            return path.read_text()
        except OSError:
            return None

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return run([self.cluster.ctr_bin, "--address", str(self.containerd_socket), *args], check=check,
                   timeout=timeout)

    def _spawn(self, name: str, argv: list[str], env: dict | None = None) -> Proc:
        proc = Proc(f"{name}{self.suffix}", self.argv(argv), self.log(name), env=env, cwd=self.cluster.workdir).start()
        self.procs[name] = proc
        return proc

    # -- start ---------------------------------------------------------------------------------------

    def setup_network(self) -> None:
        self.network.setup()

    def setup_mounts(self) -> None:
        """A mount namespace of the node's own (kept in a file under the cluster's run directory), where its hosts
        directory is bind-mounted at :attr:`LocalCluster.certs_path`, and a directory of its own at the kubelet's
        fixed device plugin path."""
        self.certs_d.mkdir(parents=True, exist_ok=True)
        image_registry = self.certs_d / IMAGE_REGISTRY
        image_registry.mkdir(exist_ok=True)
        (image_registry / "hosts.toml").write_text(f'server = "http://{IMAGE_REGISTRY}"\n\n'
                                                   f'[host."http://{IMAGE_REGISTRY}"]\n'
                                                   '  capabilities = ["pull", "resolve"]\n')
        holder = self.cluster.mount_dir / f"node{self.index}"
        holder.touch()
        run(["unshare", f"--mount={holder}", "--propagation", "slave", "true"])
        self.mount_ns = holder
        run(["nsenter", f"--mount={holder}", "--", "mount", "--bind", str(self.certs_d),
             str(self.cluster.certs_path)])
        # the kubelet's device plugin socket has a fixed path (not under --root-dir): each node's kubelet its own,
        # or kubelets starting together take each other's socket and one exits ("address already in use")
        device_plugins = self.kubelet_root.parent / "device-plugins"
        device_plugins.mkdir(parents=True, exist_ok=True)
        KUBELET_DEVICE_PLUGINS.mkdir(parents=True, exist_ok=True)
        run(["nsenter", f"--mount={holder}", "--", "mount", "--bind", str(device_plugins),
             str(KUBELET_DEVICE_PLUGINS)])

    def start_image_registry(self) -> None:
        """The cluster's images on ``127.0.0.1:5000`` in the node: the first node's registry takes the pushes, the
        others serve the same storage, read-only."""
        assert self.cluster.registry_bin is not None
        host, port = IMAGE_REGISTRY.split(":")
        first = self.index == 0
        self.registry = LocalRegistry(f"image-registry{self.suffix}", self.cluster.registry_bin,
                                      self.cluster.workdir / f"image-registry{self.suffix}", host, int(port),
                                      wrap=self.argv,
                                      storage=None if first else self.cluster.workdir / "image-registry" / "storage",
                                      readonly=not first).start()

    def start_containerd(self) -> None:
        node = self.workdir
        for d in ("containerd", "cni/net.d", "cni/ipam", "opt"):
            (node / d).mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cni_bin = next(p for p in CNI_BIN_DIRS if Path(p, "bridge").is_file())
        start, end = net.pod_range(self.index)
        (node / "cni/net.d/10-rc-node.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "rc-node", "plugins": [
                {"type": "bridge", "bridge": net.BRIDGE, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(node / "cni/ipam"),
                          "ranges": [[{"subnet": net.pod_cidr(self.index), "gateway": net.bridge_ip(self.index),
                                       "rangeStart": start, "rangeEnd": end}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}, indent=2))
        q = json.dumps
        pause = f"{IMAGE_REGISTRY}/registry-cache/pause:local"
        config = f"""\
version = 2
root = {q(str(node / "containerd"))}
state = {q(str(self.run_dir / "state"))}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = {q(str(self.containerd_socket))}
[ttrpc]
  address = {q(str(self.containerd_socket) + ".ttrpc")}

[plugins."io.containerd.internal.v1.opt"]
  path = {q(str(node / "opt"))}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {q(pause)}
  # this VM's root lacks CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = {q(str(self.run_dir / "runc"))}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {q(cni_bin)}
    conf_dir = {q(str(node / "cni/net.d"))}
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = {q(str(self.cluster.certs_path))}
"""
        (node / "containerd.toml").write_text(config)
        # Go's roots for the upstreams containerd falls back to: only the test CA; containerd 2.x finds its own
        # shim first (the config's version 2 it converts itself)
        path = f"{self.cluster.containerd_dir}:{PATH_ENV['PATH']}" if self.cluster.containerd_dir else PATH_ENV["PATH"]
        env = {"PATH": path, "SSL_CERT_FILE": str(self.cluster.test_ca_file)}
        proc = self._spawn("containerd", [self.cluster.containerd_bin, "--config", str(node / "containerd.toml")],
                           env=env)

        def answers() -> bool:
            proc.check()
            return self.ctr("version", check=False).returncode == 0

        wait_for(f"containerd of {self.name} to answer", answers, timeout=30, details=lambda: tail(proc.log))

    def start_kubelet(self) -> None:
        cp, bins_dir = self.cluster.cp, self.cluster.node_bins
        assert cp is not None and bins_dir is not None
        kubelet = self.workdir / "kubelet"
        # its root holds unix sockets (pod-resources, plugins): a short path, under /run
        self.kubelet_root.mkdir(parents=True, exist_ok=True)
        for d in ("certs", "pod-logs", "volume-plugins"):
            (kubelet / d).mkdir(parents=True, exist_ok=True)
        (kubelet / "resolv.conf").write_text("")  # Pods get no name server: nothing to ask off the machine
        self._make_cgroup_root()
        pki = self.cluster.workdir / "pki"
        _client_cert(cp.certs_dir, pki / f"kubelet{self.suffix}", f"system:node:{self.name}", "system:nodes")
        kubeconfig = _kubeconfig(pki / f"kubelet{self.suffix}.kubeconfig", cp.server, cp.ca_file,
                                 pki / f"kubelet{self.suffix}.crt", pki / f"kubelet{self.suffix}.key")
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": self.network.node_ip, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(cp.certs_dir / "client-ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root, "failSwapOn": False,
            "failCgroupV1": False, "makeIPTablesUtilChains": False,
            "resolvConf": str(kubelet / "resolv.conf"), "podLogsDir": str(kubelet / "pod-logs"),
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "volumePluginDir": str(kubelet / "volume-plugins"),
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                             "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False, "registerNode": True,
            "syncFrequency": "10s", "fileCheckFrequency": "10s",
            "nodeStatusReportFrequency": "10s",
        }
        (kubelet / "config.yaml").write_text(yaml.safe_dump(config))
        self._spawn("kubelet", [
            str(bins_dir / "kubelet"), f"--config={kubelet / 'config.yaml'}", f"--kubeconfig={kubeconfig}",
            f"--root-dir={self.kubelet_root}", f"--cert-dir={kubelet / 'certs'}", f"--hostname-override={self.name}",
            f"--node-ip={self.network.node_ip}", "--v=1"], env=PATH_ENV)

    def _make_cgroup_root(self) -> None:
        if (CGROUP_V1 / "cgroup.controllers").is_file():
            d = CGROUP_V1 / self.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            self._cgroup_dirs.append(d)
            return
        for hierarchy in sorted(CGROUP_V1.iterdir()):
            if not hierarchy.is_dir() or hierarchy.is_symlink() or hierarchy.name == "unified":
                continue
            d = hierarchy / self.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            if hierarchy.name.startswith("cpuset") or (hierarchy / "cpuset.cpus").exists():
                for f in ("cpuset.cpus", "cpuset.mems"):
                    if (hierarchy / f).exists():
                        (d / f).write_text((hierarchy / f).read_text())
            self._cgroup_dirs.append(d)

    def start_kube_proxy(self) -> None:
        assert self.cluster.node_bins is not None
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.cluster.admin_kubeconfig)},
            "mode": "iptables", "hostnameOverride": self.name, "clusterCIDR": net.POD_NETWORK,
            "bindAddress": self.network.node_ip,
            "healthzBindAddress": "127.0.0.1:10256", "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{net.bridge_ip(self.index)}/32"],
            # leave the (host-wide) conntrack sysctls alone
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"syncPeriod": "10s", "minSyncPeriod": "0s"},
        }
        path = self.workdir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config))
        self._spawn("kube-proxy", [str(self.cluster.node_bins / "kube-proxy"), f"--config={path}", "--v=1"],
                    env=PATH_ENV)

    def check(self) -> None:
        for p in self.procs.values():
            p.check()

    # -- stop ----------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop the node's processes and remove its containers, namespaces and cgroups (best effort)."""
        kubelet = self.procs.pop("kubelet", None)
        if kubelet:
            kubelet.stop()
        if self.containerd_socket.exists() and self.procs.get("containerd") and self.procs["containerd"].running:
            self._remove_containers()
        for name in ("kube-proxy", "containerd"):
            p = self.procs.pop(name, None)
            if p:
                p.stop()
        for p in self.procs.values():
            p.stop()
        self.procs.clear()
        self._kill_shims()
        if self.registry is not None:
            self.registry.stop()
            self.registry = None
        if self.mount_ns is not None:
            subprocess.run(["umount", "-l", str(self.mount_ns)], capture_output=True)
            self.mount_ns = None
        self.network.teardown()
        for d in reversed(self._cgroup_dirs):
            for sub in sorted(d.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
        self._cgroup_dirs.clear()

    def _remove_containers(self) -> None:
        tasks = self.ctr("-n", "k8s.io", "tasks", "ls", "-q", check=False).stdout.split()
        for t in tasks:
            self.ctr("-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", t, check=False)
        deadline = time.monotonic() + 15
        for t in tasks:
            while self.ctr("-n", "k8s.io", "tasks", "delete", t, check=False).returncode != 0 \
                    and time.monotonic() < deadline:
                time.sleep(0.3)
        for c in self.ctr("-n", "k8s.io", "containers", "ls", "-q", check=False).stdout.split():
            self.ctr("-n", "k8s.io", "containers", "delete", c, check=False)

    def _kill_shims(self) -> None:
        """containerd-shim-runc-v2 processes of this containerd outlive it (they are started with its
        address): SIGKILL those, found by the address in their command line."""
        needle = str(self.containerd_socket).encode()
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                cmdline = (pid_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if b"containerd-shim" in cmdline and needle in cmdline:
                try:
                    os.kill(int(pid_dir.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass


class LocalCluster:
    """A control plane and ``nodes`` nodes (:class:`Node`); see the module docstring. ``start()`` / ``stop()``, or
    a context. What a single node had is the first node's (:attr:`network`, :attr:`certs_d`, :meth:`ctr`, ...)."""

    def __init__(self, workdir: Path, *, progress: Callable[[str], None] | None = None, nodes: int = 1,
                 containerd: str = "1.6"):
        if not 1 <= nodes <= net.MAX_NODES:
            raise ClusterError(f"--nodes: from 1 to {net.MAX_NODES}, not {nodes}")
        if containerd not in CONTAINERD_VERSIONS:
            raise ClusterError(f"containerd: one of {', '.join(CONTAINERD_VERSIONS)}, not {containerd}")
        self.containerd = containerd
        self.containerd_dir: Path | None = None  # containerd 2.x's binaries (hack/containerd-bins.sh)
        self.workdir = Path(workdir).resolve()
        self.progress = progress or (lambda m: log.info("%s", m))
        self.fabric = net.Fabric()
        self.id = self.fabric.id
        self.run_dir = Path(f"/run/rc-node-{self.id}")  # sockets: short paths
        self.nodes = [Node(self, i) for i in range(nodes)]
        self.cp: LocalControlPlane | None = None
        self.procs: dict[str, Proc] = {}  # the cluster's own: kube-controller-manager, kube-scheduler
        self.images: Images | None = None
        self.test_ca: KeyPair | None = None
        self.registries: list[LocalRegistry] = []  # the test upstreams
        self.registry_bin: Path | None = None
        self.registry_version = ""
        self.crane_bin: Path | None = None
        self.node_bins: Path | None = None
        self._sysctls: dict[str, str] = {}
        self._made_var_log_containers = False
        self._made_hostpath_root = False
        self._hostpath_root_mode: int | None = None
        self._volume_dirs: list[Path] = []
        self.start_seconds: float | None = None
        self._upstream_n = 0

    # -- paths ---------------------------------------------------------------------------------------

    @property
    def node(self) -> Node:
        return self.nodes[0]

    @property
    def containerd_bin(self) -> str:
        return str(self.containerd_dir / "containerd") if self.containerd_dir else "containerd"

    @property
    def ctr_bin(self) -> str:
        return str(self.containerd_dir / "ctr") if self.containerd_dir else "ctr"

    @property
    def network(self) -> net.NodeNetwork:
        return self.node.network

    @property
    def kubeconfig(self) -> Path:
        assert self.cp is not None
        return self.cp.kubeconfig

    @property
    def certs_path(self) -> Path:
        """Where every node sees its containerd hosts directory: containerd's ``registry.config_path``, the node
        agent's ``--root`` (the chart's ``nodeAgent.hostPath``)."""
        return self.run_dir / "certs.d"

    @property
    def mount_dir(self) -> Path:
        return self.run_dir / "mnt"

    @property
    def certs_d(self) -> Path:
        """The first node's hosts directory, on the host (where its node agent writes ``hosts.toml``)."""
        return self.node.certs_d

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def kubelet_root(self) -> Path:
        return self.node.kubelet_root

    @property
    def containerd_socket(self) -> Path:
        return self.node.containerd_socket

    @property
    def containerd_log(self) -> Path:
        return self.node.containerd_log

    @property
    def test_ca_file(self) -> Path:
        return self.workdir / "test-ca.crt"

    def node_file(self, path: str | Path, node: int = 0) -> str | None:
        return self.nodes[node].file(path)

    def in_node(self, argv: list[str], node: int = 0) -> list[str]:
        return self.nodes[node].argv(argv)

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.node.ctr(*args, check=check, timeout=timeout)

    # -- lifecycle -----------------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        missing = node_prerequisites()
        if missing:
            raise ClusterError("this machine cannot run the node: missing " + "; ".join(missing)
                               + " (hack/e2e-deps.sh installs the packages, as root)")
        t0 = time.monotonic()
        for gone in sweep_stale_clusters():
            self.progress(f"removed {gone}")
        self._forget_previous_run()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.chmod(0o755)
        (self.run_dir / OWNER_FILE).write_text(f"{os.getpid()} {_process_start(os.getpid())} {self.workdir}\n")
        try:
            self.progress("binaries: kube-apiserver, etcd, the node's Kubernetes binaries, distribution, crane")
            cp_bins = resolve_bin_dir(self.progress)
            self.node_bins = bins("node-bins.sh", self.progress)
            reg_bins = bins("registry-bins.sh", self.progress)  # .../registry-v<distribution version>
            self.registry_bin, self.crane_bin = reg_bins / "registry", reg_bins / "crane"
            self.registry_version = reg_bins.name.removeprefix("registry-v")
            if self.containerd == "2":
                self.containerd_dir = bins("containerd-bins.sh", self.progress)
            self.fabric.setup()
            self._setup_mount_dir()
            for node in self.nodes:
                node.setup_network()
            self._route_between_nodes()
            self.progress(f"{len(self.nodes)} node(s) in network namespaces "
                          + ", ".join(n.network.netns for n in self.nodes)
                          + f"; control plane on {self.fabric.host_ip}")
            admin = self.workdir / "control-plane" / "certs" / "admin"
            self.cp = LocalControlPlane(self.workdir / "control-plane", cp_bins, name=f"node-{self.id}",
                                        bind_address=self.fabric.host_ip, service_accounts=True, apiserver_args=[
                                            "--authorization-mode=Node",  # after the default RBAC: Node,RBAC together
                                            "--enable-admission-plugins=NodeRestriction",
                                            "--kubelet-preferred-address-types=InternalIP",
                                            f"--kubelet-client-certificate={admin}.crt",
                                            f"--kubelet-client-key={admin}.key",
                                        ])
            self.cp.start()
            assert self.cp.port is not None
            for node in self.nodes:
                node.network.allow_apiserver(self.cp.port)  # Pods (the controller, the node agent) reach it
            self._credentials()
            self._start_controllers()
            self._test_ca()
            self._record_host_sysctls()
            self.node.setup_mounts()
            self.node.start_image_registry()
            self.node.start_containerd()
            self._push_images()
            for node in self.nodes[1:]:
                node.setup_mounts()
                node.start_image_registry()
                node.start_containerd()
            for node in self.nodes:
                node.start_kubelet()
                node.start_kube_proxy()
            self._apply_storage_class()
            self._wait_nodes_ready(self.nodes)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        self.progress(f"{len(self.nodes)} node(s) Ready ({self.start_seconds:.0f}s): "
                      + ", ".join(n.name for n in self.nodes))
        return self

    def add_node(self) -> Node:
        """One more node, started and Ready (a node pool scaling out)."""
        assert self.cp is not None and self.cp.port is not None
        node = Node(self, len(self.nodes))
        self.nodes.append(node)
        node.setup_network()
        self._route_between_nodes()
        node.network.allow_apiserver(self.cp.port)
        node.setup_mounts()
        node.start_image_registry()
        node.start_containerd()
        node.start_kubelet()
        node.start_kube_proxy()
        self._wait_nodes_ready([node])
        self.progress(f"node {node.name} Ready")
        return node

    def _route_between_nodes(self) -> None:
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    node.network.route_to(other.network)

    def _setup_mount_dir(self) -> None:
        """A private mount for the nodes' mount namespaces' files, and the hosts directory's path, which every node
        has its own directory bind-mounted on."""
        self.mount_dir.mkdir(parents=True, exist_ok=True)
        self.certs_path.mkdir(parents=True, exist_ok=True)
        run(["mount", "--bind", str(self.mount_dir), str(self.mount_dir)])
        run(["mount", "--make-private", str(self.mount_dir)])

    def _forget_previous_run(self) -> None:
        """A workdir a previous cluster ran in (``local-up`` again with the same ``--workdir``) starts afresh: that
        cluster's etcd (its Nodes, Pods and Services), the API server's serving certificate (for that run's address:
        the link network differs per cluster), the nodes' state, the test upstreams and the logs go. Kept: what only
        saves time (the built images, the product image) and the credentials the next start writes again."""
        for name in ("logs", "upstreams", "control-plane/etcd-data", "control-plane/apiserver-certs"):
            shutil.rmtree(self.workdir / name, ignore_errors=True)
        for d in [*self.workdir.glob("node"), *self.workdir.glob("node-[0-9]*"), *self.workdir.glob("image-registry*")]:
            shutil.rmtree(d, ignore_errors=True)

    def _record_host_sysctls(self) -> None:
        """The host-wide things the kubelets change, put back by :meth:`stop`."""
        for key in KUBELET_SYSCTLS:
            self._sysctls[key] = Path("/proc/sys", key.replace(".", "/")).read_text().strip()
        if not Path("/var/log/containers").exists():
            self._made_var_log_containers = True

    def _credentials(self) -> None:
        assert self.cp is not None
        certs = self.cp.certs_dir
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        pki.chmod(0o700)
        admin = (certs / "admin.crt", certs / "admin.key")
        self.admin_kubeconfig = _kubeconfig(pki / "admin.kubeconfig", self.cp.server, self.cp.ca_file, *admin)
        # kube-controller-manager runs as VOLUME_USER: its own copy of the credentials it may read
        # (under /run: the workdir may sit in a directory only root can enter, e.g. pytest's basetemp)
        kcm = self.run_dir / "kcm"
        kcm.mkdir(exist_ok=True)
        self.kcm_kubeconfig = _kubeconfig(kcm / "kubeconfig", self.cp.server, self.cp.ca_file, *admin)
        shutil.copy(certs / "sa.key", kcm / "sa.key")
        shutil.copy(self.cp.ca_file, kcm / "ca.crt")
        for f in (kcm, kcm / "kubeconfig", kcm / "sa.key", kcm / "ca.crt"):
            os.chown(f, VOLUME_USER, VOLUME_USER)

    def _spawn(self, name: str, argv: list[str], *, env: dict | None = None, user: int | None = None) -> Proc:
        if user is not None:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", "--", *argv]
        proc = Proc(name, argv, self.logs / f"{name}.log", env=env, cwd=self.workdir).start()
        self.procs[name] = proc
        return proc
    def _start_controllers(self) -> None:
        assert self.cp is not None
        if not HOSTPATH_PV_ROOT.exists():
            HOSTPATH_PV_ROOT.mkdir()
            self._made_hostpath_root = True
        mode = HOSTPATH_PV_ROOT.stat().st_mode & 0o7777
        if mode != 0o1777:
            # the provisioner (as VOLUME_USER) creates one directory per volume in it: world-writable and
            # sticky like /tmp, so each owner keeps its own (the mode is restored by stop())
            self._hostpath_root_mode = mode
            HOSTPATH_PV_ROOT.chmod(0o1777)
        bins = self.node_bins
        assert bins is not None
        self._spawn("kube-controller-manager", [
            str(bins / "kube-controller-manager"), f"--kubeconfig={self.kcm_kubeconfig}",
            "--leader-elect=false", "--secure-port=0", "--enable-hostpath-provisioner",
            f"--service-account-private-key-file={self.run_dir / 'kcm' / 'sa.key'}",
            "--use-service-account-credentials=false", "--controllers=*,-serviceaccount-token",
            # the ConfigMap kube-root-ca.crt in every namespace: Pods' projected tokens trust the API server by it
            f"--root-ca-file={self.run_dir / 'kcm' / 'ca.crt'}",
            "--node-monitor-grace-period=40s", "--v=1"], user=VOLUME_USER)
        self._spawn("kube-scheduler", [
            str(bins / "kube-scheduler"), f"--kubeconfig={self.admin_kubeconfig}", "--leader-elect=false",
            "--secure-port=0", "--v=1"])

    def _test_ca(self) -> None:
        self.test_ca = generate_ca("registry-cache local test CA")
        self.test_ca_file.write_text(self.test_ca.cert_pem)

    def crane(self, args: list[str], env: dict | None = None) -> str:
        """crane inside the first node, trusting the test CA."""
        assert self.crane_bin is not None
        full = {"PATH": "/usr/bin:/bin", "HOME": str(self.workdir), "SSL_CERT_FILE": str(self.test_ca_file),
                "DOCKER_CONFIG": str(self.workdir / "crane"), **(env or {})}
        return run(self.node.argv([str(self.crane_bin), *args]), env=full, timeout=300).stdout

    def _push_images(self) -> None:
        assert self.node_bins and self.registry_bin and self.test_ca
        busybox = static_busybox()
        assert busybox is not None  # node_prerequisites
        self.progress("images: pause and the distribution registry, built with crane")
        self.images = build_and_push(self.crane, self.workdir / "images", IMAGE_REGISTRY,
                                     pause_bin=self.node_bins / "pause", registry_bin=self.registry_bin,
                                     registry_tag=self.registry_version, ca_bundle_pem=self.test_ca.cert_pem,
                                     busybox_bin=busybox)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
        return run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], check=check, input=input,
                   timeout=timeout)

    def _apply_storage_class(self) -> None:
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump(_STORAGE_CLASS))

    def _wait_nodes_ready(self, nodes: list[Node], timeout: float = 180) -> None:
        def ready() -> bool:
            self.check()
            for node in nodes:
                res = self.kubectl("get", "node", node.name, "-o", "json", check=False)
                if res.returncode != 0:
                    return False
                conds = {c["type"]: c["status"] for c in json.loads(res.stdout)["status"].get("conditions", [])}
                if conds.get("Ready") != "True":
                    return False
            return True

        wait_for("node(s) " + ", ".join(n.name for n in nodes) + " to be Ready", ready, timeout=timeout, interval=1,
                 details=lambda: "\n".join(tail(n.log("kubelet"), 20) for n in nodes))

    def check(self) -> None:
        """Raise when a process of the cluster has ended."""
        for p in self.procs.values():
            p.check()
        for node in self.nodes:
            node.check()

    def egress(self) -> net.Egress:
        """What tried to leave the cluster: every node's count and the host's."""
        total = net.Egress(0, [], [], self.fabric.host_packets())
        for node in self.nodes:
            if node.network.created:
                total = total + node.network.egress()
        return total

    def reset_egress(self) -> None:
        for node in self.nodes:
            if node.network.created:
                node.network.reset_egress()
        self.fabric.reset()

    # -- test registries -------------------------------------------------------------------------------

    def allocate_address(self) -> str:
        """The next free IP literal of the node's bridge, for a test server (each once)."""
        address = net.REGISTRY_IPS[self._upstream_n]
        self._upstream_n += 1
        return address

    def upstream(self, name: str, users: dict[str, str] | None = None) -> LocalRegistry:
        """A new upstream registry on the next free IP literal of the node's bridge, port 443, TLS from the
        test CA; private (basic auth) with ``users``."""
        assert self.registry_bin is not None and self.test_ca is not None
        address = self.allocate_address()
        cert = generate_server_cert(self.test_ca, name, [name], [address])
        reg = LocalRegistry(name, self.registry_bin, self.workdir / "upstreams" / f"{address}-{name}", address, 443,
                            wrap=self.node.argv, tls=(cert.cert_pem, cert.key_pem), ca_file=self.test_ca_file,
                            users=users)
        self.registries.append(reg.start())
        return reg

    # -- teardown --------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything and leave the host as it was (idempotent, best effort, reports nothing)."""
        if self.cp is not None and self.cp.running:
            self.volume_dirs()
        for node in self.nodes:
            kubelet = node.procs.pop("kubelet", None)
            if kubelet:
                kubelet.stop()
        for name in ("kube-scheduler", "kube-controller-manager"):
            p = self.procs.pop(name, None)
            if p:
                p.stop()
        for p in self.procs.values():
            p.stop()
        self.procs.clear()
        for reg in self.registries:
            reg.stop()
        self.registries.clear()
        for node in reversed(self.nodes):
            node.stop()
        if self.cp is not None:
            self.cp.stop()
        self._unmount_all()
        self.fabric.teardown()
        for key, value in self._sysctls.items():
            try:
                Path("/proc/sys", key.replace(".", "/")).write_text(value)
            except OSError as e:
                log.warning("cannot restore %s=%s: %s", key, value, e)
        self._sysctls.clear()
        containers = Path("/var/log/containers")
        if containers.is_dir():
            logs = [str(n.workdir / "kubelet" / "pod-logs") for n in self.nodes]
            for link in containers.iterdir():
                if link.is_symlink() and os.readlink(link).startswith(tuple(logs)):
                    link.unlink(missing_ok=True)
            if self._made_var_log_containers:
                try:
                    containers.rmdir()
                except OSError:
                    pass
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self._release_volumes()

    def _release_volumes(self) -> None:
        """Remove the directories of this cluster's host-path volumes (the ones its PVs name) and put
        /tmp/hostpath_pv back as it was."""
        for d in self._volume_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self._volume_dirs.clear()
        if self._made_hostpath_root:
            try:
                HOSTPATH_PV_ROOT.rmdir()
                self._made_hostpath_root = False
            except OSError:
                pass
        elif self._hostpath_root_mode is not None and HOSTPATH_PV_ROOT.exists():
            HOSTPATH_PV_ROOT.chmod(self._hostpath_root_mode)
            self._hostpath_root_mode = None

    def volume_dirs(self) -> list[Path]:
        """The host directories of the cluster's PersistentVolumes now (remembered for stop())."""
        res = self.kubectl("get", "pv", "-o", "json", check=False)
        dirs = []
        if res.returncode == 0:
            for pv in json.loads(res.stdout)["items"]:
                path = (pv["spec"].get("hostPath") or {}).get("path")
                if path:
                    dirs.append(Path(path))
        for d in dirs:
            if d not in self._volume_dirs and str(d).startswith(str(HOSTPATH_PV_ROOT) + "/"):
                self._volume_dirs.append(d)
        return dirs

    def _unmount_all(self) -> None:
        roots = (str(self.workdir) + "/", str(self.run_dir) + "/")
        for _ in range(3):
            mounts = []
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    point = line.split()[4].encode().decode("unicode_escape")
                    if point.startswith(roots):
                        mounts.append(point)
            if not mounts:
                return
            for point in sorted(set(mounts), key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)


# --- clusters left behind ------------------------------------------------------------------------------
# A run killed with SIGKILL (or a test session ended by SIGTERM) cannot stop its cluster. Each cluster writes
# who started it into its /run directory; the next LocalCluster.start() removes every cluster whose starter is
# gone: its processes (by network namespace, cgroup and command line), mounts, network namespace, cgroups.

OWNER_FILE = "owner"  # in /run/rc-node-<id>: "<pid> <its start time in clock ticks> <workdir>"
RUN_ROOT = Path("/run")
UNOWNED_GRACE_SECONDS = 60.0  # a /run directory without an owner file is taken for stale only after this


def _process_start(pid: int) -> str:
    """The start time of a process (field 22 of /proc/<pid>/stat), "" when there is none: with the pid it tells
    a process from a later one with the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def stale_clusters(run_root: Path = RUN_ROOT) -> list[tuple[str, Path | None]]:
    """(id, workdir) of every cluster whose starter is gone (or that names none and is older than
    :data:`UNOWNED_GRACE_SECONDS`)."""
    stale = []
    for d in sorted(run_root.glob("rc-node-*")):
        try:
            parts = (d / OWNER_FILE).read_text().split(maxsplit=2)
        except OSError:  # none yet (a cluster starting right now), or none ever (made before owners were written)
            if time.time() - d.stat().st_mtime < UNOWNED_GRACE_SECONDS:
                continue
            parts = []
        if len(parts) == 3 and parts[0].isdigit() and _process_start(int(parts[0])) == parts[1]:
            continue  # its starter runs
        stale.append((d.name.removeprefix("rc-node-"), Path(parts[2].strip()) if len(parts) == 3 else None))
    if run_root != RUN_ROOT:  # (the namespaces are the host's: only its own /run says which are owned)
        return stale
    # namespaces without their /run directory (a reboot emptied /run but kept the bind mounts' names): nobody owns them
    known = {d.name.removeprefix("rc-node-") for d in run_root.glob("rc-node-*")}
    for name in run(["ip", "netns", "list"], check=False).stdout.split():
        m = re.fullmatch(r"rc-(?:node|fab)-([0-9a-f]+)(?:-\d+)?", name)
        if m and m.group(1) not in known:
            known.add(m.group(1))
            stale.append((m.group(1), None))
    return stale


def _namespaces(cluster_id: str) -> list[str]:
    """The network namespaces of a cluster: its nodes' and its fabric's."""
    names = run(["ip", "netns", "list"], check=False).stdout.split()
    return [n for n in names if n in (f"rc-node-{cluster_id}", f"rc-fab-{cluster_id}")
            or n.startswith(f"rc-node-{cluster_id}-")]


def _pids(cluster_id: str, workdir: Path | None) -> set[int]:
    """The processes of a cluster: in its network namespace or its cgroups, or naming its /run directory or
    workdir on their command line."""
    pids: set[int] = set()
    for netns in _namespaces(cluster_id):
        listed = run(["ip", "netns", "pids", netns], check=False)
        pids.update(int(p) for p in listed.stdout.split() if p.isdigit())
    for procs in [*CGROUP_V1.glob(f"*/rc-node-{cluster_id}/**/cgroup.procs"),
                  *CGROUP_V1.glob(f"*/rc-node-{cluster_id}-*/**/cgroup.procs")]:
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            pass
    needles = [f"/run/rc-node-{cluster_id}/".encode()] + ([f"{workdir}/".encode()] if workdir else [])
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if any(n in cmdline for n in needles):
                pids.add(int(pid_dir.name))
    return pids - {os.getpid(), os.getppid()}


def sweep_stale_clusters(run_root: Path = RUN_ROOT) -> list[str]:
    """Remove every cluster left behind by a run that cannot stop it any more; what was removed, in words."""
    removed = []
    for cluster_id, workdir in stale_clusters(run_root):
        run_dir = run_root / f"rc-node-{cluster_id}"
        for _ in range(3):  # a container's processes may be forked while the first ones go
            pids = _pids(cluster_id, workdir)
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        namespaces = _namespaces(cluster_id)
        roots = tuple(f"{r}/" for r in (run_dir, workdir, *(f"/run/netns/{n}" for n in namespaces)) if r)
        with open("/proc/self/mountinfo") as f:
            points = [p for p in (line.split()[4].encode().decode("unicode_escape") for line in f)
                      if p.startswith(roots) or p in {f"/run/netns/{n}" for n in namespaces} or p == str(run_dir)]
        for point in sorted(set(points), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        for netns in namespaces:
            run(["ip", "netns", "del", netns], check=False)
        run(["ip", "link", "del", f"rcn{cluster_id}"], check=False)  # and the host's routes through it
        net.remove_host_chain(net.HOST_CHAIN.format(cluster_id))
        for top in [*CGROUP_V1.glob(f"*/rc-node-{cluster_id}"), *CGROUP_V1.glob(f"*/rc-node-{cluster_id}-*")]:
            for sub in sorted(top.glob("**/"), key=lambda p: len(p.parts), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(f"the cluster rc-node-{cluster_id} a killed run left behind"
                       + (f" (workdir {workdir})" if workdir else ""))
    return removed


class PushedImage:
    """An image pushed to a test upstream: runnable (the pause program) and unique (a file of its own)."""

    def __init__(self, upstream: LocalRegistry, repository: str, tag: str, digest: str, blobs: frozenset[str]):
        self.upstream, self.repository, self.tag, self.digest, self.blobs = upstream, repository, tag, digest, blobs

    @property
    def ref(self) -> str:
        return f"{self.upstream.host}/{self.repository}:{self.tag}"

    @property
    def all_digests(self) -> frozenset[str]:
        return self.blobs | {self.digest}


def push_test_image(cluster: LocalCluster, upstream: LocalRegistry, repository: str, tag: str,
                    auth: tuple[str, str] | None = None) -> PushedImage:
    """Build a small runnable image (the pause program plus a unique file) and push it to ``upstream``."""
    import io
    import secrets as _secrets
    import tarfile
    import tempfile

    assert cluster.node_bins is not None
    work = Path(tempfile.mkdtemp(prefix="image-", dir=cluster.workdir))
    token = _secrets.token_hex(16)
    layer = work / "layer.tar"
    with tarfile.open(layer, "w") as tar:
        data = f"registry-cache e2e {repository}:{tag} {token}\n".encode()
        info = tarfile.TarInfo(f"registry-cache-e2e/{token}.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
        pause = cluster.node_bins / "pause"
        info = tarfile.TarInfo("pause")
        info.size, info.mode, info.mtime = pause.stat().st_size, 0o755, 0
        with open(pause, "rb") as f:
            tar.addfile(info, f)
    env = {"DOCKER_CONFIG": str(work)}
    auths = {}
    if auth:
        auths[upstream.host] = {"auth": base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}
    (work / "config.json").write_text(json.dumps({"auths": auths}))
    (work / "config.json").chmod(0o600)
    ref = f"{upstream.host}/{repository}:{tag}"
    cluster.crane(["append", "-f", str(layer), "-t", ref], env)
    cluster.crane(["mutate", ref, "--entrypoint", "/pause", "--set-platform", "linux/amd64", "-t", ref], env)
    digest = cluster.crane(["digest", ref], env).strip()
    manifest = json.loads(cluster.crane(["manifest", ref], env))
    shutil.rmtree(work, ignore_errors=True)
    blobs = frozenset([manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])])
    return PushedImage(upstream, repository, tag, digest, blobs)
