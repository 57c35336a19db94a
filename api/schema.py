"""The JSON Schemas of the providerConfigs, generated from the models: ``RegistryConfig`` v1alpha3 and
``MirrorConfig`` v1alpha1.

``python -m api.schema`` prints them; ``python -m api.schema --write`` refreshes the committed copies
(``api/schema/registryconfig-v1alpha3.json``, ``api/schema/mirrorconfig-v1alpha1.json``) that editors and CI
use; a unit test keeps them current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from api import mirror_v1alpha1
from api.v1alpha3 import API_VERSION, RegistryConfig

SCHEMA_DIR = Path(__file__).parent / "schema"
SCHEMA_PATH = SCHEMA_DIR / "registryconfig-v1alpha3.json"
MIRROR_SCHEMA_PATH = SCHEMA_DIR / "mirrorconfig-v1alpha1.json"


def _schema(model: type[BaseModel], api_version: str, kind: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://gardener.cloud/schemas/{api_version}/{kind}.json",
        **model.model_json_schema(by_alias=True),
    }


def registry_config_schema() -> dict[str, Any]:
    return _schema(RegistryConfig, API_VERSION, "RegistryConfig")


def mirror_config_schema() -> dict[str, Any]:
    return _schema(mirror_v1alpha1.MirrorConfig, mirror_v1alpha1.API_VERSION, mirror_v1alpha1.KIND_CONFIG)


def _text(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render() -> str:
    return _text(registry_config_schema())


def render_mirror() -> str:
    return _text(mirror_config_schema())


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        for path, text in ((SCHEMA_PATH, render()), (MIRROR_SCHEMA_PATH, render_mirror())):
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    else:
        sys.stdout.write(render())
        sys.stdout.write(render_mirror())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
