"""YAML documents read with limits: what the command line and the node agent read must not be able to make them
recurse without end or build megabytes from a few hundred bytes.

``yaml.safe_load`` builds a document nested thousands of levels deep by recursion (``RecursionError``) and
expands aliases by reference, so a 700-byte "billion laughs" document loads quickly but is tens of megabytes
when walked or printed. Like Kubernetes' own YAML decoder, which refuses "excessive aliasing", these limits
refuse such documents with a clear error.
"""

from __future__ import annotations

from typing import Any

import yaml

from api.errors import RegistryCacheError

MAX_DEPTH = 100  # a Kubernetes object is a few tens of levels deep
MAX_NODES = 200_000  # values once aliases are expanded; a large Shoot has a few thousand


class YAMLLimitError(RegistryCacheError):
    """The text is YAML but too deep or too large once aliases are expanded; the message says which."""


def check_limits(doc: Any, max_depth: int = MAX_DEPTH, max_nodes: int = MAX_NODES) -> None:
    """Raise :class:`YAMLLimitError` when ``doc`` is nested deeper than ``max_depth`` or holds more than
    ``max_nodes`` values counted as if every alias were expanded (it stops counting there)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise YAMLLimitError(f"larger than {max_nodes} values once its aliases are expanded "
                                 "(excessive aliasing)")
        if depth > max_depth:
            raise YAMLLimitError(f"nested more than {max_depth} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            nodes += len(value)  # the keys
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def load_all(text: str) -> list[Any]:
    """Every document of ``text`` (empty ones left out), within the limits. Raises ``yaml.YAMLError`` for text
    that is not YAML and :class:`YAMLLimitError` for YAML beyond the limits."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except RecursionError:
        raise YAMLLimitError(f"nested more than {MAX_DEPTH} levels deep") from None
    for doc in docs:
        check_limits(doc)
    return docs


def load(text: str) -> Any:
    """The one document of ``text`` (None when empty), within the limits; more than one is a ``yaml.YAMLError``."""
    try:
        doc = yaml.safe_load(text)
    except RecursionError:
        raise YAMLLimitError(f"nested more than {MAX_DEPTH} levels deep") from None
    check_limits(doc)
    return doc
