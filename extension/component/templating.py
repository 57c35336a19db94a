"""The Jinja environment of every template in ``templates/``: quoting filters, and the shared names as ``c``.

Every value that comes from a user passes through a quoting filter (:mod:`.quoting`), so no value can
change the structure of a rendered document. Imports only Jinja, PyYAML and the quoting filters: the node
agent renders ``hosts.toml`` with it.
"""

from __future__ import annotations

import base64
from typing import Any

import jinja2
import yaml

from extension import constants
from extension.component.quoting import sh_quote, toml_array, toml_quote, yaml_quote


def b64(value: str | bytes) -> str:
    return base64.b64encode(value.encode() if isinstance(value, str) else value).decode()


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("extension.component", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)
_env.filters.update(yaml_quote=yaml_quote, toml_quote=toml_quote, toml_array=toml_array, sh_quote=sh_quote, b64=b64)
_env.globals["c"] = constants

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~20x faster, same results


def render(template: str, **values: Any) -> str:
    return _env.get_template(template).render(**values)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)
