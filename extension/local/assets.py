"""Where the files the local cluster needs are: the CRDs, the admission policies, the examples, the build
scripts and Go wrapper modules of ``hack/``.

Installed (``pip install .``) they are package data under ``extension/local/<name>/`` (see ``pyproject.toml``);
in a checkout (or an editable install) they are the repository's own top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_IN_CHECKOUT = {"crds": "manifests/crds", "seed_crds": "manifests/seed-crds", "policies": "manifests/policies",
                "examples": "examples", "hack": "hack", "chart": "charts/registry-cache", "manifests": "manifests"}


def asset_dir(name: str) -> Path:
    """The folder ``name`` (``crds``, ``seed_crds``, ``policies``, ``examples``, ``hack``, ``chart``,
    ``manifests``)."""
    packaged = _HERE / name
    if packaged.is_dir():
        return packaged
    return _HERE.parents[1] / _IN_CHECKOUT[name]
