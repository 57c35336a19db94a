"""Where the files the local cluster needs are: the manifests (the CRDs, the admission policies, the kustomize
bases), the Helm chart, the examples, the build scripts and Go wrapper modules of ``hack/``.

Installed (``pip install 'registry-cache[local]'``: the distribution ``registry-cache-local``, ``local/pyproject.toml``)
they are package data under ``extension/local/`` (``manifests/``, ``chart/``, ``examples/``, ``hack/``); in a
checkout (or an editable install) they are the repository's own top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_PACKAGED = {"crds": "manifests/crds", "seed_crds": "manifests/seed-crds", "policies": "manifests/policies",
             "examples": "examples", "hack": "hack", "chart": "chart", "manifests": "manifests"}
_IN_CHECKOUT = {"crds": "manifests/crds", "seed_crds": "manifests/seed-crds", "policies": "manifests/policies",
                "examples": "examples", "hack": "hack", "chart": "charts/registry-cache", "manifests": "manifests"}


def asset_dir(name: str) -> Path:
    """The folder ``name`` (``crds``, ``seed_crds``, ``policies``, ``examples``, ``hack``, ``chart``,
    ``manifests``)."""
    packaged = _HERE / _PACKAGED[name]
    if packaged.is_dir():
        return packaged
    return _HERE.parents[1] / _IN_CHECKOUT[name]
