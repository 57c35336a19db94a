"""Which clusters of extension/local are left behind by a killed run (``stale_clusters``): by the owner file
each one writes into its /run directory, here in a directory of the test's own."""

import os
import subprocess
import sys
import time

from extension.local.node import OWNER_FILE, UNOWNED_GRACE_SECONDS, _process_start, stale_clusters


def _cluster(root, cluster_id, owner=None, age=0.0):
    d = root / f"rc-node-{cluster_id}"
    d.mkdir()
    if owner is not None:
        (d / OWNER_FILE).write_text(owner)
    if age:
        then = time.time() - age
        os.utime(d, (then, then))
    return d


def test_a_cluster_whose_starter_is_gone_is_stale_and_one_whose_starter_runs_is_not(tmp_path):
    me = os.getpid()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    gone = int(done.stdout)  # a pid that ran and ended
    _cluster(tmp_path, "aaaaaa", f"{me} {_process_start(me)} /work/a\n")
    _cluster(tmp_path, "bbbbbb", f"{gone} 12345 /tmp/node0\n")
    _cluster(tmp_path, "cccccc", f"{me} 1 /tmp/with spaces/node1\n")  # the pid now another process's
    _cluster(tmp_path, "dddddd")  # no owner, just made: a cluster starting right now
    _cluster(tmp_path, "eeeeee", age=UNOWNED_GRACE_SECONDS + 5)  # no owner for long: made by an older version
    _cluster(tmp_path, "ffffff", "garbage", age=UNOWNED_GRACE_SECONDS + 5)
    assert [(i, str(w) if w else None) for i, w in stale_clusters(tmp_path)] == [
        ("bbbbbb", "/tmp/node0"), ("cccccc", "/tmp/with spaces/node1"), ("eeeeee", None), ("ffffff", None)]
