"""Decoding the API server's JSON without letting one deeply nested object stop the others. Pure: no I/O.

The API server stores objects nested up to 10,000 levels deep (its decoder's limit). Python's ``json`` module
follows nesting by recursion and gives up with ``RecursionError`` at about 1,000 levels, and much of what runs
on a decoded object recurses too (the ``kubernetes`` client's serialization, two stack frames per level). So
this controller decodes no object nested deeper than :data:`MAX_DEPTH` levels (the object itself is level 1;
real Kubernetes and Gardener objects stay far below, a Shoot at about 15):

- :func:`depth` measures the nesting of a JSON text without decoding it (no recursion; strings skipped), and
  does so only when the text has more opening brackets than the limit (a count costs next to nothing), so an
  ordinary object goes straight to ``json.loads``;
- :func:`loads` decodes a text in which some containers nest too deep: each container that starts below the
  limit is replaced by ``None`` (a *skeleton*: the object's metadata, name and namespace included, survives),
  and the paths of the cut containers are returned, so that a caller can drop exactly the list items that
  held them and name them;
- :func:`decode_object`, :func:`decode_list` and :func:`decode_event` apply the limit to the object itself,
  whether it came alone (GET, the answer to a write), as an item of a List or in a watch event.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

MAX_DEPTH = 256

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"{}[]")
_STEP = bytes(1 if b in b"{[" else 255 if b in b"}]" else 0 for b in range(256))  # 255: -1 as a signed byte
_QUOTED = re.compile(rb'"[^"]*"')
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def _bytes(raw: bytes | bytearray | str) -> bytes:
    return raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw)


def depth(raw: bytes | bytearray | str) -> int:
    """How deep the containers of a JSON text nest (0 for a scalar). Linear, without recursion."""
    data = _bytes(raw)
    # drop escaped backslashes, then escaped quotes: every quote left delimits a string; then the strings
    unquoted = _QUOTED.sub(b"", data.replace(b"\\\\", b"").replace(b'\\"', b""))
    steps = unquoted.translate(None, _NOT_BRACKETS).translate(_STEP)
    return max(accumulate(array("b", steps)), default=0)


def too_deep(raw: bytes | bytearray | str, limit: int) -> bool:
    """Whether the text nests deeper than ``limit``; only counts brackets unless there are more than that."""
    data = _bytes(raw)
    return data.count(b"{") + data.count(b"[") > limit and depth(data) > limit


def loads(raw: bytes | bytearray | str, limit: int) -> tuple[Any, set[tuple[Any, ...]]]:
    """The decoded value, and the paths of the containers that started deeper than ``limit`` and were replaced
    by ``None`` (none: the value is exact). A path holds at most the first two steps from the top: an object's
    key, or for an array the position among the array's containers (a List's items are all objects)."""
    if not too_deep(raw, limit):
        try:
            return json.loads(raw), set()
        except RecursionError:  # only when the caller's own stack is already nearly as deep as Python allows
            pass
    text = raw.decode("utf-8", "replace") if isinstance(raw, (bytes, bytearray)) else raw
    return _pruned(text, limit)


def _pruned(text: str, limit: int) -> tuple[Any, set[tuple[Any, ...]]]:
    pieces: list[str] = []
    copied = 0  # text[:copied] is in pieces (or cut)
    cut: set[tuple[Any, ...]] = set()
    # per open container: [its path (first two steps), the last string seen directly in it, its containers]
    stack: list[list[Any]] = []
    level = 0
    cut_level = 0  # the level of the container being cut (0: none), and where it starts
    cut_start = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token[0] == '"':
            if not cut_level and stack:
                stack[-1][1] = token
            continue
        if token in "{[":
            level += 1
            if cut_level:
                continue
            path: tuple[Any, ...] = ()
            if stack:
                parent = stack[-1]
                step = (json.loads(parent[1]) if parent[1] is not None else None) if parent[3] == "{" else parent[2]
                parent[2] += 1
                path = parent[0] if len(parent[0]) >= 2 else (*parent[0], step)
            if level > limit:
                cut_level, cut_start = level, match.start()
                cut.add(path)
                continue
            stack.append([path, None, 0, token])
            continue
        # a closing bracket
        if cut_level:
            if level == cut_level:
                pieces.append(text[copied:cut_start])
                pieces.append("null")
                copied = match.end()
                cut_level = 0
            level -= 1
            continue
        if stack:
            stack.pop()
        level -= 1
    pieces.append(text[copied:])
    return json.loads("".join(pieces)), cut


def decode_object(raw: bytes | bytearray | str, limit: int = MAX_DEPTH) -> tuple[Any, bool]:
    """One object (a GET, the answer to a write, an error's Status): the value (a skeleton when it nests too
    deep) and whether it does."""
    value, cut = loads(raw, limit)
    return value, bool(cut)


def decode_list(raw: bytes | bytearray | str, limit: int = MAX_DEPTH) -> tuple[Any, list[dict[str, Any]]]:
    """A List: the value without the items that nest deeper than ``limit`` (as objects), and the skeletons of
    those items. Should anything but items nest too deep (no List does), the whole list counts as too deep:
    :class:`TooDeep`."""
    value, cut = loads(raw, limit + 2)  # the List and its items array are two levels above each item
    if not cut:
        return value, []
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list) or any(len(path) != 2 or path[0] != "items" for path in cut):
        raise TooDeep(value)
    bad = {path[1] for path in cut}
    value["items"] = [item for i, item in enumerate(items) if i not in bad]
    return value, [item for i, item in enumerate(items) if i in bad and isinstance(item, dict)]


def decode_event(raw: bytes | bytearray | str, limit: int = MAX_DEPTH) -> tuple[Any, bool]:
    """A watch event: the event (its object a skeleton when the object nests deeper than ``limit``) and whether
    it does."""
    value, cut = loads(raw, limit + 1)  # the event is one level above its object
    return value, bool(cut)


class TooDeep(ValueError):
    """A JSON text nested deeper than :data:`MAX_DEPTH` where no part of it could be dropped alone."""

    def __init__(self, skeleton: Any):
        self.skeleton = skeleton
        super().__init__(f"the JSON nests deeper than {MAX_DEPTH} levels")
