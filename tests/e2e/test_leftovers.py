"""A one-node cluster whose run is killed with SIGKILL cannot stop itself; the next cluster's start removes it
(extension/local/node.py, ``sweep_stale_clusters``): here a cluster with a running Pod, its starter killed,
then the sweep, and nothing of it is left on the host."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from extension.local.node import CGROUP_V1, node_prerequisites, stale_clusters, sweep_stale_clusters

STARTER = r'''
import sys, time
from pathlib import Path
from extension.local.node import LocalCluster

cluster = LocalCluster(Path(sys.argv[1])).start()
assert cluster.images is not None
cluster.kubectl("run", "left", "--image", cluster.images.pause, "--restart=Never")
cluster.kubectl("wait", "--for=condition=Ready", "pod/left", "--timeout=120s")
print("READY", cluster.id, flush=True)
time.sleep(3600)
'''


def _processes_naming(needles: list[str]) -> list[str]:
    found = []
    for pid_dir in Path("/proc").iterdir():
        if pid_dir.name.isdigit():
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(n in cmdline for n in needles):
                found.append(f"{pid_dir.name}: {cmdline[:120]}")
    return found


def test_a_cluster_left_by_a_killed_run_is_removed_by_the_next_start(tmp_path):
    missing = node_prerequisites()
    if missing:
        pytest.skip("the one-node cluster needs " + "; ".join(missing)
                    + " (as root, hack/e2e-deps.sh installs the packages)")
    workdir = tmp_path / "killed"
    starter = subprocess.Popen([sys.executable, "-c", STARTER, str(workdir)], stdout=subprocess.PIPE,
                               stderr=open(tmp_path / "starter.log", "wb"), text=True, start_new_session=True)
    try:
        line = starter.stdout.readline() if starter.stdout else ""
        assert line.startswith("READY "), (tmp_path / "starter.log").read_text()[-3000:]
        cluster_id = line.split()[1]
    finally:
        os.killpg(starter.pid, signal.SIGKILL)  # the run and nothing else: its cluster's processes live on
        starter.wait()
    netns, run_dir = f"rc-node-{cluster_id}", Path(f"/run/rc-node-{cluster_id}")
    assert netns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert _processes_naming([str(workdir) + "/", str(run_dir) + "/"]), "nothing was left behind to remove"
    assert (cluster_id, workdir) in stale_clusters()

    t0 = time.monotonic()
    removed = sweep_stale_clusters()
    print(f"removed in {time.monotonic() - t0:.1f}s: {removed}")
    assert any(netns in r for r in removed), removed
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not run_dir.exists()
    assert not list(CGROUP_V1.glob(f"*/{netns}"))
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(run_dir) not in mounts and str(workdir) + "/" not in mounts
    assert not _processes_naming([str(workdir) + "/", str(run_dir) + "/"])
    assert (cluster_id, workdir) not in stale_clusters()
