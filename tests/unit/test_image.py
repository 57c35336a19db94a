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


def test_the_product_image_needs_a_checkout(tmp_path):
    """An installed package has hack/image.sh but not the Dockerfile and the sources it builds from: it says so."""
    import pytest

    from extension.local.images import ImageUnavailable, product_archive

    with pytest.raises(ImageUnavailable, match="built from a checkout"):
        product_archive(source=tmp_path)


def test_the_archive_names_its_tag_and_digest(tmp_path):
    import io
    import json
    import tarfile

    import pytest

    from extension.local.images import ClusterError, archive_manifest, archive_tag

    key = "ab" * 32
    archive = tmp_path / f"registry-cache-{key}.tar"
    manifest = json.dumps({"schemaVersion": 2, "layers": []}).encode()
    index = json.dumps({"schemaVersion": 2, "manifests": [{"digest": "sha256:" + "cd" * 32}]}).encode()
    with tarfile.open(archive, "w") as tar:
        for name, data in (("index.json", index), ("blobs/sha256/" + "cd" * 32, manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert archive_tag(archive) == key[:16]
    assert archive_manifest(archive) == ("sha256:" + "cd" * 32, {"schemaVersion": 2, "layers": []})
    with pytest.raises(ClusterError):
        archive_tag(tmp_path / "other.tar")
