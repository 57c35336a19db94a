"""Short-lived upstream credentials from a kubelet credential provider plugin (KEP-2133), per cache.

A cache's ``secretReferenceName`` may name a Secret of type :data:`TYPE_CREDENTIAL_PROVIDER` instead of a
username and password. It says which plugin gets the cache's credentials, as one ``providers[]`` entry of the
kubelet's ``CredentialProviderConfig`` does, and which image holds the plugin's binary:

``name`` (required)
    The plugin's name: the file name of its binary in the cache Pod (letters, digits, ``.``, ``_``, ``-``).
``image`` (required)
    The image that holds the binary. An init container of the cache Pod runs it with
    ``cp <binaryPath> <the Pod's plugin directory>/<name>``, so the image needs a ``cp`` (any image built
    ``FROM busybox``, ``alpine``, ``debian``, ...). The shoot's nodes pull it as they pull any image.
``binaryPath`` (optional, default ``/bin/<name>``)
    Where the binary is in that image: an absolute path.
``args`` (optional)
    The plugin's arguments: a YAML (or JSON) list of strings, e.g. ``["get-credentials"]``.
``env`` (optional)
    More environment for the plugin: a YAML (or JSON) list of ``{name, value}``, as the kubelet's
    ``ExecEnvVar``; the cache container's own environment is passed on too, these override it.
``apiVersion`` (optional, default ``credentialprovider.kubelet.k8s.io/v1``)
    The version of the CredentialProviderRequest sent to the plugin, and the one its answer must have;
    ``v1beta1`` and ``v1alpha1`` have the same shape.
``defaultCacheDuration`` (optional, default ``0s``)
    How long an answer without a ``cacheDuration`` is used (a Go duration); ``0s``: not kept at all.

The Secret is immutable, as every credentials Secret; it holds no other keys. It is checked here with the
Secret and key named in every message, never a value (``env`` values and ``args`` may be secrets, e.g. a
cloud access key the plugin exchanges for a registry token). Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from api import field
from api.duration import DurationError, format_duration, parse_duration
from api.field import FieldError, Path
from api.gostrings import go_quote
from api.secrets import SecretData

TYPE_CREDENTIAL_PROVIDER = "registry-cache.gardener.cloud/credential-provider"

NAME_KEY = "name"
IMAGE_KEY = "image"
BINARY_PATH_KEY = "binaryPath"
ARGS_KEY = "args"
ENV_KEY = "env"
API_VERSION_KEY = "apiVersion"
DEFAULT_CACHE_DURATION_KEY = "defaultCacheDuration"
KEYS = (NAME_KEY, IMAGE_KEY, BINARY_PATH_KEY, ARGS_KEY, ENV_KEY, API_VERSION_KEY, DEFAULT_CACHE_DURATION_KEY)

API_VERSION_V1 = "credentialprovider.kubelet.k8s.io/v1"
API_VERSIONS = (API_VERSION_V1, "credentialprovider.kubelet.k8s.io/v1beta1",
                "credentialprovider.kubelet.k8s.io/v1alpha1")

MAX_NAME_LENGTH = 128
MAX_IMAGE_LENGTH = 512
MAX_PATH_LENGTH = 1024
MAX_ARGS = 64
MAX_ENV = 64
MAX_DOCUMENT_BYTES = 64 << 10  # args or env: a YAML document of at most 64 KiB

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PATH = re.compile(r"/[A-Za-z0-9._+@=,/-]*\Z")
# distribution's reference grammar (github.com/distribution/reference): [domain/]path[:tag][@digest]
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_REFERENCE = re.compile(rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?\Z")


@dataclass(frozen=True)
class CredentialProvider:
    """A cache's credential provider plugin, as its Secret configures it (valid: :func:`provider_errors` found
    nothing). ``args`` and ``env`` may hold secrets: they are never shown."""

    name: str
    image: str
    binary_path: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = API_VERSION_V1
    default_cache_seconds: int = 0  # whole seconds (an answer is kept at least a second or not at all)

    def __repr__(self) -> str:
        return (f"CredentialProvider(name={self.name!r}, image={self.image!r}, binary_path={self.binary_path!r}, "
                f"args=<{len(self.args)} hidden>, env=<{', '.join(n for n, _ in self.env)}>, "
                f"api_version={self.api_version!r}, default_cache_seconds={self.default_cache_seconds})")

    __str__ = __repr__


class ProviderConfigError(ValueError):
    """A credential provider Secret that cannot be used; the message names keys, never values."""


def is_credential_provider(secret: SecretData) -> bool:
    return secret.type == TYPE_CREDENTIAL_PROVIDER


def _text(secret: SecretData, key: str, problems: list[str]) -> str | None:
    """The entry as UTF-8 text without NUL (None: absent or not text; the problem noted)."""
    if key not in secret.data:
        return None
    where = f"the data entry {go_quote(key)} in the referenced secret {go_quote(secret.key)}"
    try:
        text = secret.data[key].decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{where} is not valid UTF-8")
        return None
    if "\x00" in text:
        problems.append(f"{where} contains a NUL character")
        return None
    return text


def _yaml_list(text: str, where: str, problems: list[str]) -> list[Any] | None:
    if len(text.encode("utf-8")) > MAX_DOCUMENT_BYTES:
        problems.append(f"{where} is larger than {MAX_DOCUMENT_BYTES} bytes")
        return None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problems.append(f"{where} is not a YAML (or JSON) list{at}")  # where, never what
        return None
    if document is None:
        return []
    if not isinstance(document, list):
        problems.append(f"{where} must be a YAML (or JSON) list, not a {_kind(document)}")
        return None
    return document


def _kind(value: Any) -> str:
    return {dict: "map", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__)


def _analyse(secret: SecretData) -> tuple[CredentialProvider | None, list[str]]:
    key = go_quote(secret.key)
    problems: list[str] = []

    def where(entry: str) -> str:
        return f"the data entry {go_quote(entry)} in the referenced secret {key}"

    for extra in sorted(set(secret.data) - set(KEYS)):
        problems.append(f"unexpected data entry {go_quote(extra)} in the referenced secret {key}: a credential "
                        f"provider Secret has only {', '.join(go_quote(k) for k in KEYS)}")

    name = _text(secret, NAME_KEY, problems)
    if NAME_KEY not in secret.data:
        problems.append(f'missing "{NAME_KEY}" data entry in the referenced secret {key}')
    elif name is not None:
        if not _NAME.match(name) or len(name) > MAX_NAME_LENGTH or name in (".", ".."):
            problems.append(f"{where(NAME_KEY)} must be a file name of at most {MAX_NAME_LENGTH} characters: "
                            "letters, digits, '.', '_' and '-', starting with a letter or digit")
            name = None

    image = _text(secret, IMAGE_KEY, problems)
    if IMAGE_KEY not in secret.data:
        problems.append(f'missing "{IMAGE_KEY}" data entry in the referenced secret {key}')
    elif image is not None:
        image = image.strip()
        if len(image) > MAX_IMAGE_LENGTH or not _REFERENCE.match(image):
            problems.append(f"{where(IMAGE_KEY)} is not an image reference ([registry/]repository[:tag][@digest])")
            image = None

    binary_path = _text(secret, BINARY_PATH_KEY, problems)
    if binary_path is not None:
        binary_path = binary_path.strip()
        if len(binary_path) > MAX_PATH_LENGTH or not _PATH.match(binary_path) or \
                any(part in (".", "..") for part in binary_path.split("/")) or binary_path.endswith("/"):
            problems.append(f"{where(BINARY_PATH_KEY)} must be an absolute path to a file (letters, digits and "
                            "._+@=,/- only, no '.' or '..' parts)")
            binary_path = None
    elif BINARY_PATH_KEY not in secret.data and name is not None:
        binary_path = f"/bin/{name}"

    args: list[str] = []
    text = _text(secret, ARGS_KEY, problems)
    if text is not None:
        items = _yaml_list(text, where(ARGS_KEY), problems)
        if items is not None:
            if len(items) > MAX_ARGS:
                problems.append(f"{where(ARGS_KEY)} has more than {MAX_ARGS} arguments")
            for i, item in enumerate(items):
                if not isinstance(item, str):
                    problems.append(f"{where(ARGS_KEY)}: item {i} must be a string, not a {_kind(item)}")
                elif "\x00" in item:
                    problems.append(f"{where(ARGS_KEY)}: item {i} contains a NUL character")
                else:
                    args.append(item)

    env: list[tuple[str, str]] = []
    text = _text(secret, ENV_KEY, problems)
    if text is not None:
        items = _yaml_list(text, where(ENV_KEY), problems)
        if items is not None:
            if len(items) > MAX_ENV:
                problems.append(f"{where(ENV_KEY)} has more than {MAX_ENV} variables")
            seen: set[str] = set()
            for i, item in enumerate(items):
                at = f"{where(ENV_KEY)}: item {i}"
                if not isinstance(item, dict):
                    problems.append(f"{at} must be a map with \"name\" and \"value\", not a {_kind(item)}")
                    continue
                for extra in sorted(str(k) for k in item if k not in ("name", "value")):
                    problems.append(f"{at} has the field {go_quote(extra)}: only \"name\" and \"value\" are allowed")
                env_name, value = item.get("name"), item.get("value")
                if not isinstance(env_name, str) or not _ENV_NAME.match(env_name):
                    problems.append(f"{at}: \"name\" must be an environment variable name (letters, digits and "
                                    "'_', not starting with a digit)")
                    env_name = None
                elif env_name in seen:
                    problems.append(f"{at}: the name {go_quote(env_name)} is given more than once")
                if not isinstance(value, str):
                    problems.append(f"{at}: \"value\" must be a string")  # the value itself is never shown
                    value = None
                elif "\x00" in value:
                    problems.append(f"{at}: \"value\" contains a NUL character")
                    value = None
                if env_name is not None and value is not None and env_name not in seen:
                    env.append((env_name, value))
                if env_name is not None:
                    seen.add(env_name)

    api_version = API_VERSION_V1
    text = _text(secret, API_VERSION_KEY, problems)
    if text is not None:
        if text.strip() not in API_VERSIONS:
            problems.append(f"{where(API_VERSION_KEY)} must be one of {', '.join(go_quote(v) for v in API_VERSIONS)}")
        else:
            api_version = text.strip()

    default_seconds = 0
    text = _text(secret, DEFAULT_CACHE_DURATION_KEY, problems)
    if text is not None:
        try:
            nanoseconds = parse_duration(text.strip())
        except DurationError:
            problems.append(f"{where(DEFAULT_CACHE_DURATION_KEY)} is not a Go duration (e.g. \"12h\", \"30m\")")
        else:
            if nanoseconds < 0:
                problems.append(f"{where(DEFAULT_CACHE_DURATION_KEY)} must not be negative")
            default_seconds = max(0, nanoseconds) // 1_000_000_000

    if problems or name is None or image is None or binary_path is None:
        return None, problems
    return CredentialProvider(name, image, binary_path, tuple(args), tuple(env), api_version, default_seconds), []


def provider_errors(secret: SecretData, path: Path, reference_name: str,
                    require_immutable: bool = True) -> list[FieldError]:
    """Everything wrong with a credential provider Secret, as ``field.invalid(path, reference_name, ...)``
    errors naming the Secret and key, never a value. ``require_immutable`` as for the other formats (False
    for gardenlet's ``ref-`` copy)."""
    _, problems = _analyse(secret)
    if require_immutable and not secret.immutable:
        problems = [f"the referenced secret {go_quote(secret.key)} should be immutable"] + problems
    return [field.invalid(path, reference_name, p) for p in problems]


def read_provider(secret: SecretData) -> CredentialProvider:
    """The plugin of a Secret :func:`provider_errors` found nothing wrong with (immutability aside); raises
    :class:`ProviderConfigError` with every problem, no values."""
    provider, problems = _analyse(secret)
    if provider is None:
        raise ProviderConfigError("; ".join(problems) or f"no credential provider in {go_quote(secret.key)}")
    return provider


def describe(provider: CredentialProvider) -> str:
    """One line for logs and messages: what runs, never its arguments or environment values."""
    cache = format_duration(provider.default_cache_seconds * 1_000_000_000)
    return (f"credential provider plugin {provider.name!r} from image {provider.image} ({provider.api_version}, "
            f"defaultCacheDuration {cache})")
