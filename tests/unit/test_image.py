"""The registry image the caches run and the distribution the tests build are one version, pinned as Gardener's."""

import re
from pathlib import Path

from extension.constants import DEFAULT_IMAGE

REPO = Path(__file__).resolve().parents[2]


def test_default_image_is_pinned_by_digest_to_the_version_the_tests_build():
    match = re.fullmatch(r"docker\.io/library/registry:(\d+\.\d+\.\d+)@sha256:([0-9a-f]{64})", DEFAULT_IMAGE)
    assert match, DEFAULT_IMAGE
    built = re.search(r"^DISTRIBUTION_VERSION=v(\S+)$", (REPO / "hack" / "registry-bins.sh").read_text(), re.M)
    assert built and built.group(1) == match.group(1)
    # Gardener's extension v0.24.0 pins registry 3.1.1 by this digest (imagevector/images.yaml)
    assert (match.group(1), match.group(2)) == (
        "3.1.1", "1be55279f18a2fe1a74edf2664cac61c1bea305b7b4642dab412e7affdcb3e33")
