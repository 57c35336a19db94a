"""Strict decoding of a providerConfig (``RegistryConfig``, ``MirrorConfig``) into the models, errors with field
paths."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from api import field
from api.field import FieldError, Path, ValidationFailed
from api.v1alpha3 import API_VERSION, KIND_CONFIG, RegistryConfig

_TYPE_WORDS = {
    "string_type": "expected a string",
    "bool_type": "expected a boolean (true or false)",
    "list_type": "expected a list",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "dict_type": "expected an object",
    "int_type": "expected an integer",
}
_MAX_SHOWN = 80
M = TypeVar("M", bound=BaseModel)


def _shown(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return "{...}" if isinstance(value, dict) else "[...]"
    if isinstance(value, str) and len(value) > _MAX_SHOWN:
        return value[:_MAX_SHOWN] + "..."
    return value


def _path_of(base: Path, loc: tuple[Any, ...]) -> Path:
    path = base
    for part in loc:
        path = path.index(part) if isinstance(part, int) else path.child(str(part))
    return path


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The wire names a model accepts at ``loc`` (for the 'unknown field' message)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = {f.alias or name: f for name, f in current.model_fields.items()}
        annotation = fields[part].annotation
        current = _model_in(annotation)
        if current is None:
            return []
    return [f.alias or name for name, f in current.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def pydantic_errors(exc: ValidationError, base: Path, model: type[BaseModel]) -> list[FieldError]:
    """Translate pydantic's errors into Kubernetes-style field errors."""
    errors: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _path_of(base, loc)
        kind = err["type"]
        value = err.get("input")
        if kind == "extra_forbidden":
            known = ", ".join(_known_fields(model, loc))
            errors.append(field.forbidden(path, f"unknown field; known fields here are: {known}"))
        elif kind == "missing" or value is None:
            errors.append(field.required(path))
        elif kind in _TYPE_WORDS:
            errors.append(field.invalid(path, _shown(value), _TYPE_WORDS[kind]))
        elif kind == "value_error":
            errors.append(field.invalid(path, _shown(value), str(err["ctx"]["error"])))
        else:
            errors.append(field.invalid(path, _shown(value), err["msg"]))
    return errors


def decode_config(raw: Any, path: Path | None, model: type[M], api_version: str, kind: str, extension: str) -> M:
    """Decode a providerConfig (already parsed from YAML/JSON) of ``extension`` strictly into ``model``.

    Raises :class:`ValidationFailed` with every problem found, each with its field path below ``path``.
    """
    base = path if path is not None else Path("providerConfig")
    if raw is None:
        raise ValidationFailed([field.required(base, f"providerConfig of the {extension} extension is required")])
    if not isinstance(raw, dict):
        raise ValidationFailed([field.invalid(base, _shown(raw), f"expected an object of kind {kind}")])
    errors: list[FieldError] = []
    raw_api_version, raw_kind = raw.get("apiVersion"), raw.get("kind")
    if raw_api_version is None:
        errors.append(field.required(base.child("apiVersion"), f"must be {api_version}"))
    elif raw_api_version != api_version:
        errors.append(field.not_supported(base.child("apiVersion"), _shown(raw_api_version), [api_version]))
    if raw_kind is not None and raw_kind != kind:  # missing: Go takes it from the apiVersion's type
        errors.append(field.not_supported(base.child("kind"), _shown(raw_kind), [kind]))
    if errors:
        raise ValidationFailed(errors)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValidationFailed(pydantic_errors(exc, base, model)) from None


def decode_registry_config(raw: Any, path: Path | None = None) -> RegistryConfig:
    """Decode a ``RegistryConfig`` providerConfig strictly (see :func:`decode_config`)."""
    return decode_config(raw, path, RegistryConfig, API_VERSION, KIND_CONFIG, "registry-cache")
