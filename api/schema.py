"""The JSON Schema of ``RegistryConfig`` v1alpha3, generated from the models.

``python -m api.schema`` prints it; ``python -m api.schema --write`` refreshes the committed copy
(``api/schema/registryconfig-v1alpha3.json``) that editors and CI use; a unit test keeps it current.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from api.v1alpha3 import API_VERSION, RegistryConfig

SCHEMA_PATH = Path(__file__).parent / "schema" / "registryconfig-v1alpha3.json"


def registry_config_schema() -> dict[str, Any]:
    schema = RegistryConfig.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://gardener.cloud/schemas/{API_VERSION}/RegistryConfig.json",
        **schema,
    }


def render() -> str:
    return json.dumps(registry_config_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    if argv[1:] == ["--write"]:
        SCHEMA_PATH.write_text(render(), encoding="utf-8")
        print(f"wrote {SCHEMA_PATH}", file=sys.stderr)
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
