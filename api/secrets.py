"""Credential Secrets: reading them from manifests and checking them as the Gardener extension does.

Values of a Secret never appear in an error: errors name the Secret and the key.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from api import field
from api.errors import RegistryCacheError
from api.field import FieldError, Path
from api.gostrings import go_is_space, go_quote, go_trim_space

USERNAME_KEY = "username"
PASSWORD_KEY = "password"
JSON_KEY_USERNAME = "_json_key"
SERVICE_ACCOUNT_FIELDS = frozenset({
    "type", "project_id", "client_email", "universe_domain", "auth_uri", "auth_provider_x509_cert_url",
    "client_x509_cert_url", "client_id", "private_key_id", "private_key", "token_uri",
})


@dataclass(frozen=True)
class SecretData:
    namespace: str
    name: str
    immutable: bool | None
    data: dict[str, bytes] = dc_field(default_factory=dict)
    type: str = "Opaque"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    def __repr__(self) -> str:  # never show the data
        return f"SecretData({self.key!r}, keys={sorted(self.data)})"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return "Credentials(<hidden>)"

    __str__ = __repr__


class SecretFormatError(RegistryCacheError, ValueError):
    """A Secret manifest that cannot be read; the message names the key, never a value."""


def secret_from_manifest(obj: Any, source: str = "Secret") -> SecretData:
    """A Secret as ``kubectl get secret -o yaml`` prints it (``data`` in base64) or as written with
    ``stringData``; ``stringData`` wins over ``data`` for the same key, as the API server does."""
    if not isinstance(obj, dict) or obj.get("kind") != "Secret" or obj.get("apiVersion", "v1") != "v1":
        raise SecretFormatError(f"{source}: expected a v1 Secret (apiVersion: v1, kind: Secret)")
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise SecretFormatError(f"{source}: metadata.name is required")
    namespace = meta.get("namespace") or ""
    data: dict[str, bytes] = {}
    raw_data = obj.get("data") or {}
    if not isinstance(raw_data, dict):
        raise SecretFormatError(f"{source}: data must be a map of key to base64 value")
    for key, value in raw_data.items():
        if not isinstance(value, str):
            raise SecretFormatError(f"{source}: data[{key}] must be a base64 string")
        try:
            data[str(key)] = base64.b64decode(value.replace("\n", ""), validate=True)
        except (binascii.Error, ValueError):
            raise SecretFormatError(f"{source}: data[{key}] is not valid base64") from None
    string_data = obj.get("stringData") or {}
    if not isinstance(string_data, dict):
        raise SecretFormatError(f"{source}: stringData must be a map of key to string")
    for key, value in string_data.items():
        if not isinstance(value, str):
            raise SecretFormatError(f"{source}: stringData[{key}] must be a string")
        data[str(key)] = value.encode()
    immutable = obj.get("immutable")
    return SecretData(namespace=str(namespace), name=name,
                      immutable=immutable if isinstance(immutable, bool) else None,
                      data=data, type=str(obj.get("type") or "Opaque"))


def validate_upstream_secret(secret: SecretData, path: Path, reference_name: str,
                             require_immutable: bool = True) -> list[FieldError]:
    """``ValidateUpstreamRegistrySecret``: immutable, exactly ``username`` and ``password``, a username
    without whitespace, a non-empty password, and for ``_json_key`` a service account key.

    Immutability is asked of the Secret a user creates; gardenlet's ``ref-`` copy in the seed is checked
    with ``require_immutable=False``."""
    errs: list[FieldError] = []

    def bad(detail: str) -> None:
        errs.append(field.invalid(path, reference_name, detail))

    key = go_quote(secret.key)
    if require_immutable and not secret.immutable:
        bad(f"the referenced secret {key} should be immutable")
    if len(secret.data) != 2:
        bad(f"the referenced secret {key} should have only two data entries")
    # Go's order: everything about the username, then the password
    username = _entry_text(secret, USERNAME_KEY, key, bad)
    if username is not None and any(go_is_space(ch) for ch in username):
        bad(f'the data entry "username" in the referenced secret {key} contains whitespace')
    password = _entry_text(secret, PASSWORD_KEY, key, bad)
    if username == JSON_KEY_USERNAME and password is not None:
        errs += validate_service_account_json(password, path, reference_name, key)
    return errs


def _entry_text(secret: SecretData, entry: str, key: str, bad) -> str | None:
    if entry not in secret.data:
        bad(f'missing "{entry}" data entry in the referenced secret {key}')
        return None
    try:
        text = secret.data[entry].decode("utf-8")
    except UnicodeDecodeError:  # deliberate: it goes into the cache's YAML configuration as text
        bad(f'the data entry "{entry}" in the referenced secret {key} is not valid UTF-8')
        return None
    if not go_trim_space(text):
        bad(f'the data entry "{entry}" in the referenced secret {key} is empty')
    return text


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def validate_service_account_json(password: str, path: Path, reference_name: str, key: str) -> list[FieldError]:
    """Go: ``json.Unmarshal(password, &map[string]string{})``, then every key must be a service-account
    field. Like Go, only the first value that is not a string is reported, and ``null`` is an empty key."""
    prefix = f"failed to unmarshal ServiceAccount json from the password data entry in the referenced secret {key}: "
    try:
        document = json.loads(password, parse_constant=_no_constants)
    except ValueError as exc:
        # The JSON error says where, not what: it carries no part of the password.
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return [field.invalid(path, reference_name, f"{prefix}invalid JSON{where}")]
    if document is None:
        return []
    if not isinstance(document, dict):
        return [field.invalid(path, reference_name, f"{prefix}expected a JSON object, got {type(document).__name__}")]
    errs = []
    not_strings = [name for name, value in document.items() if value is not None and not isinstance(value, str)]
    if not_strings:
        errs.append(field.invalid(path, reference_name, f"{prefix}field {go_quote(not_strings[0])} must be a string"))
    for name in sorted(document):
        if name not in SERVICE_ACCOUNT_FIELDS:
            errs.append(field.invalid(path, reference_name,
                                      f"forbidden ServiceAccount field {go_quote(name)} present in the password "
                                      f"data entry in the referenced secret {key}"))
    return errs


def credentials_of(secret: SecretData) -> Credentials:
    """The username and password of a Secret that passed :func:`validate_upstream_secret`."""
    return Credentials(secret.data[USERNAME_KEY].decode("utf-8"), secret.data[PASSWORD_KEY].decode("utf-8"))
