"""Field paths and validation errors shaped like ``k8s.io/apimachinery/pkg/util/validation/field``.

An error prints as Kubernetes prints it, path first::

    spec.extensions[0].providerConfig.caches[1].upstream: Invalid value: "https://ghcr.io": upstream must not...

Values that must stay secret are built with ``hidden=True`` and never printed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from api.errors import RegistryCacheError


class Path:
    """An immutable field path: ``Path("spec").child("extensions").index(0).child("providerConfig")``."""

    __slots__ = ("_parts",)

    def __init__(self, *names: str):
        self._parts: tuple[str, ...] = tuple(names)

    def child(self, name: str, *more: str) -> Path:
        p = Path()
        p._parts = self._parts + (name,) + more
        return p

    def index(self, i: int) -> Path:
        p = Path()
        p._parts = self._parts + (f"[{i}]",)
        return p

    def key(self, k: str) -> Path:
        p = Path()
        p._parts = self._parts + (f"[{k}]",)
        return p

    def __str__(self) -> str:
        out = ""
        for part in self._parts:
            if part.startswith("[") or not out:
                out += part
            else:
                out += "." + part
        return out

    def __repr__(self) -> str:
        return f"Path({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Path) and self._parts == other._parts

    def __hash__(self) -> int:
        return hash(self._parts)


class ErrorType(str, Enum):
    REQUIRED = "Required value"
    INVALID = "Invalid value"
    DUPLICATE = "Duplicate value"
    FORBIDDEN = "Forbidden"
    NOT_SUPPORTED = "Unsupported value"
    TOO_LONG = "Too long"
    NOT_FOUND = "Not found"


_OMIT = object()

# How much of a value an error message shows: a hostname (253 characters) in full, never megabytes.
MAX_SHOWN = 1024
_MAX_DEPTH = 32


class _Full(Exception):
    pass


def brief(value: Any, limit: int = MAX_SHOWN) -> str:
    """``value`` as JSON (keys sorted), cut to ``limit`` characters with ``...``.

    It never builds more than it shows: a YAML alias bomb or a document nested thousands of levels deep prints as
    its first ``limit`` characters, in about as much time.
    """
    parts: list[str] = []
    size = 0

    def emit(text: str) -> None:
        nonlocal size
        parts.append(text)
        size += len(text)
        if size > limit:
            raise _Full

    def walk(v: Any, depth: int) -> None:
        if depth > _MAX_DEPTH:
            emit("...")
        elif isinstance(v, bool):
            emit("true" if v else "false")
        elif v is None:
            emit("null")
        elif isinstance(v, (int, float)):
            try:
                emit(str(v))
            except ValueError:  # an int too long to print
                emit("<a number with more than 4300 digits>")
        elif isinstance(v, str):
            emit(json.dumps(v[:limit + 1], ensure_ascii=False))
        elif isinstance(v, dict):
            emit("{")
            try:
                items = sorted(v.items(), key=lambda kv: str(kv[0]))
            except TypeError:
                items = list(v.items())
            for i, (k, x) in enumerate(items):
                emit(("," if i else "") + json.dumps(str(k)[:limit + 1], ensure_ascii=False) + ":")
                walk(x, depth + 1)
            emit("}")
        elif isinstance(v, (list, tuple)):
            emit("[")
            for i, x in enumerate(v):
                if i:
                    emit(",")
                walk(x, depth + 1)
            emit("]")
        else:
            emit(json.dumps(str(v)[:limit + 1], ensure_ascii=False))

    try:
        walk(value, 0)
    except _Full:
        return "".join(parts)[:limit] + "..."
    return "".join(parts)


def _format_value(value: Any) -> str:
    return brief(value)


@dataclass(frozen=True)
class FieldError:
    type: ErrorType
    path: str
    detail: str = ""
    value: Any = _OMIT

    def __str__(self) -> str:
        head = f"{self.path}: {self.type.value}"
        if self.type in (ErrorType.REQUIRED, ErrorType.FORBIDDEN, ErrorType.TOO_LONG):
            return f"{head}: {self.detail}" if self.detail else head
        parts = [head]
        if self.value is not _OMIT:
            parts.append(_format_value(self.value))
        if self.detail:
            parts.append(self.detail)
        return ": ".join(parts)


def required(path: Path, detail: str = "") -> FieldError:
    return FieldError(ErrorType.REQUIRED, str(path), detail)


def invalid(path: Path, value: Any, detail: str, hidden: bool = False) -> FieldError:
    return FieldError(ErrorType.INVALID, str(path), detail, "(hidden)" if hidden else value)


def duplicate(path: Path, value: Any, detail: str = "") -> FieldError:
    return FieldError(ErrorType.DUPLICATE, str(path), detail, value)


def forbidden(path: Path, detail: str) -> FieldError:
    return FieldError(ErrorType.FORBIDDEN, str(path), detail)


def not_found(path: Path, value: Any, detail: str = "") -> FieldError:
    return FieldError(ErrorType.NOT_FOUND, str(path), detail, value)


def not_supported(path: Path, value: Any, supported: Iterable[str]) -> FieldError:
    detail = "supported values: " + ", ".join(json.dumps(s) for s in supported)
    return FieldError(ErrorType.NOT_SUPPORTED, str(path), detail, value)


def too_long(path: Path, max_length: int) -> FieldError:
    return FieldError(ErrorType.TOO_LONG, str(path), f"may not be more than {max_length} bytes")


@dataclass
class ValidationFailed(RegistryCacheError):
    """Raised with every error found, never with a secret value in it."""

    errors: list[FieldError] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(str(e) for e in self.errors)
