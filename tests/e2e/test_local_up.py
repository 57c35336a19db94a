"""The README's first command with the node: ``registry-cache local-up`` ends with the caches Running and
Ready and an image pulled by the node through each cache, and leaves nothing behind.
It starts a cluster of its own next to the test session's (another network namespace and link)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from extension.local.node import node_prerequisites

pytestmark = pytest.mark.e2e


def test_local_up_with_the_node(tmp_path):
    missing = node_prerequisites()
    if missing:
        pytest.skip("local-up's node needs " + "; ".join(missing))
    done = subprocess.run([sys.executable, "-m", "extension.cli", "local-up", "--no-wait", "--workdir",
                           str(tmp_path)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Extension shoot--local--local-botany/registry-cache: Create Succeeded" in out
    for cache in ("registry-10-244-0-2-0", "registry-10-244-0-3-0"):
        # every container Ready (distribution, and the coalescing front when it runs in the Pod)
        assert any(cache in line and re.search(r"\s(\d)/\1\s", line) and "Running" in line
                   for line in out.splitlines()), out
    for image in ("10.244.0.2/library/hello:1.0", "10.244.0.3/team/app:1.0"):
        assert f"({image}): Running and Ready" in out, out
    assert out.count("the node pulled it through its cache") == 2, out
    assert "server = \"https://10.244.0.3\"" in out
    # what it runs on is gone afterwards: no network namespace of it left
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    line = next(line for line in out.splitlines() if "network namespaces rc-node-" in line)
    names = re.findall(r"rc-node-[0-9a-f]+(?:-\d+)?", line)
    assert names and not any(name in netns for name in names), (line, netns)
