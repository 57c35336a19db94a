"""Every credential format a user already has, reduced to the one username and password the cache uses.

The cache (distribution's proxy) authenticates to its upstream with one username and password only (its
credential helper answers with them). This module reads the formats users keep credentials in and returns exactly the
username and password a ``docker login`` (or a kubelet pulling with the same Secret) would have used:

Secrets referenced through ``secretReferenceName``
  - Gardener's opaque Secret with exactly ``username`` and ``password`` (checked by
    :func:`api.secrets.validate_upstream_secret`, unchanged);
  - ``kubernetes.io/dockerconfigjson`` (key ``.dockerconfigjson``, ``{"auths": {REGISTRY: ENTRY}}``) and
    ``kubernetes.io/dockercfg`` (key ``.dockercfg``, the legacy form whose top level is the auths map);
  - the KEP "Arbitrary image pull secrets" shape (``kubernetes.io/regcredentials``: ``serverAddress``,
    ``username``, ``password``, ``identityToken``, ``registryToken``);
  - no username and password at all but a kubelet credential provider plugin that gets short-lived ones
    (``registry-cache.gardener.cloud/credential-provider``, :mod:`api.credential_provider`): the cache runs it.

Files on disk (pure readers taking bytes; :mod:`extension.cli.credentials` does the I/O)
  Docker's ``config.json`` and a legacy ``.dockercfg`` here (the Secrets hold the same documents); an rkt
  ``auth.d`` JSON file, a Mesos ``.tar.gz`` of ``.docker/config.json`` and ``--username`` with a password
  from stdin in :mod:`api.credential_files`.

Decisions:

- **auth over username/password.** A Docker entry's ``auth`` (``base64(username:password)``) wins over its
  ``username``/``password`` fields when both are there, as Docker's CLI (``configfile.LoadFromReader``) and
  the kubelet (``DockerConfigEntry.UnmarshalJSON``) both do; an empty ``auth`` counts as absent.
- **Identity tokens.** distribution can only send a username and password upstream (its proxy credential
  store has no refresh-token support), so an ``identitytoken``/``identityToken`` becomes the password, and
  the username is the entry's own username when it has one (``docker login`` to Azure Container Registry
  stores ``auth`` = ``base64("00000000-0000-0000-0000-000000000000:")`` next to the token) or else
  ``<token>``, the username Docker's credential helpers use to mean "the secret is an identity token".
  Registries that take a refresh token as a basic-auth password (ACR) work; others need a username and
  password. An identity token wins over a password in the same entry, as in Docker.
- **Registry tokens** (``registryToken``, Docker's ``registrytoken``, rkt's ``oauth``) are bearer tokens
  for the registry itself: distribution cannot send one, so they are an error that says so.
- **Matching an entry to the upstream.** Keys are compared by host: the scheme, a trailing path (``/v1/``,
  ``/v2/``, ``/org/...``) and a default port (``:443``, and ``:80`` with ``http://``) are dropped and the
  host is lower-cased. ``docker.io`` matches ``docker.io``, ``index.docker.io``, ``registry-1.docker.io``
  and ``https://index.docker.io/v1/``; ``host:port`` matches only with that port. When several keys
  match, the most specific one wins: for docker.io first ``https://index.docker.io/v1/`` (the key
  ``docker login`` writes and Docker's CLI looks up); then the key written exactly as the upstream; then
  no path, then an API-version path (``/v1/``), then a repository path (fewer segments first), at each
  level the host spelled as the upstream before an alias and no scheme before a scheme. Keys equally
  specific with different credentials are an error.
- Usernames and passwords then follow Gardener's rules (non-empty, no whitespace in the username, UTF-8,
  the service-account key check for ``_json_key``), whatever the format.

Every message names the Secret or file, the data key and the registry, never a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from api import field, secrets
from api.credential_provider import CredentialProvider, is_credential_provider, provider_errors, read_provider
from api.errors import RegistryCacheError
from api.field import FieldError, Path
from api.secrets import (
    JSON_KEY_USERNAME,
    PASSWORD_KEY,
    USERNAME_KEY,
    Credentials,
    SecretData,
    credentials_of,
    validate_upstream_secret,
)

# --- formats -------------------------------------------------------------------------------------------
TYPE_OPAQUE = "Opaque"
TYPE_DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
TYPE_DOCKERCFG = "kubernetes.io/dockercfg"
TYPE_REGCREDENTIALS = "kubernetes.io/regcredentials"  # the KEP draft's proposed type
DOCKERCONFIGJSON_KEY = ".dockerconfigjson"
DOCKERCFG_KEY = ".dockercfg"
KEP_SERVER_ADDRESS = "serverAddress"
KEP_IDENTITY_TOKEN = "identityToken"
KEP_REGISTRY_TOKEN = "registryToken"
KEP_KEYS = (KEP_SERVER_ADDRESS, USERNAME_KEY, PASSWORD_KEY, KEP_IDENTITY_TOKEN, KEP_REGISTRY_TOKEN)

FORMAT_OPAQUE = "opaque"
FORMAT_DOCKERCONFIGJSON = "dockerconfigjson"
FORMAT_DOCKERCFG = "dockercfg"
FORMAT_KEP = "regcredentials"
FORMAT_CREDENTIAL_PROVIDER = "credential-provider"

# What a cache authenticates to its upstream with: a username and password, or a plugin that gets them.
UpstreamAuth = Credentials | CredentialProvider

# Docker credential helpers answer with this username when the secret is an identity token.
TOKEN_USERNAME = "<token>"

DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_INDEX_KEY = "https://index.docker.io/v1/"  # the key `docker login` writes for Docker Hub

MAX_DOCUMENT_BYTES = 1 << 20          # a Secret holds at most 1 MiB; so does any credentials file we read

REGISTRY_TOKEN_DETAIL = ("holds a registry token (a bearer token for the registry), but the cache authenticates "
                         "to its upstream only with a username and password (what distribution's proxy asks its "
                         "credential helper for): give a username and password instead")


class CredentialsError(RegistryCacheError, ValueError):
    """Credentials that cannot be read or used. The message names keys, files and registries, never a value;
    the caller puts where (which Secret, which file) in front of it."""


@dataclass(frozen=True)
class RegistryEntry:
    """The credentials for one registry key of a source, or why there are none.

    ``username_from`` and ``password_from`` say where the values came from, as noun phrases for messages
    (``"auth" of the entry "quay.io"``)."""

    registry: str
    credentials: Credentials | None = None
    problem: str | None = None
    username_from: str = "the username"
    password_from: str = "the password"

    def __repr__(self) -> str:
        state = "credentials" if self.credentials else f"problem={self.problem!r}"
        return f"RegistryEntry({self.registry!r}, {state})"


@dataclass(frozen=True)
class RegistryCredentials:
    """Credentials per registry, as read from one source (a Docker config, an rkt file, ...)."""

    entries: tuple[RegistryEntry, ...] = ()
    # why an upstream without an entry has none here (Docker's credsStore/credHelpers); names only
    store_hint: dict[str, str] = dc_field(default_factory=dict)
    default_store: str | None = None

    @property
    def registries(self) -> list[str]:
        return [e.registry for e in self.entries]

    def select(self, upstream: str) -> RegistryEntry:
        """The entry for ``upstream`` (see the module's matching rules); raises :class:`CredentialsError`
        when there is none or the best ones disagree."""
        ranked = [(rank, entry) for entry in self.entries
                  if (rank := match_rank(entry.registry, upstream)) is not None]
        if not ranked:
            raise CredentialsError(self._no_entry(upstream))
        best = min(rank for rank, _ in ranked)
        winners = [entry for rank, entry in ranked if rank == best]
        first = winners[0]
        if any((e.credentials, e.problem) != (first.credentials, first.problem) for e in winners[1:]):
            raise CredentialsError(
                f"the entries {_names(e.registry for e in winners)} match the upstream {_q(upstream)} equally "
                "well but hold different credentials: keep one of them")
        if first.credentials is None and first.problem is None:
            raise CredentialsError(self._no_entry(upstream, empty=first.registry))
        return first

    def for_upstream(self, upstream: str) -> Credentials:
        """The credentials for ``upstream``, as read (Gardener's content rules are :func:`credential_problems`)."""
        entry = self.select(upstream)
        if entry.problem is not None:
            raise CredentialsError(entry.problem)
        assert entry.credentials is not None
        return entry.credentials

    def _no_entry(self, upstream: str, empty: str | None = None) -> str:
        if empty is not None:
            text = f"the entry {_q(empty)} for the upstream {_q(upstream)} holds no credentials"
        else:
            present = _names(self.registries) if self.entries else "none"
            text = f"no credentials for the upstream {_q(upstream)} (registries present: {present})"
        helper = next((h for reg, h in self.store_hint.items() if match_rank(reg, upstream) is not None), None)
        if helper:
            text += (f"; Docker keeps them with the credential helper {_q('docker-credential-' + helper)}, not in "
                     "this file: use --username and --password-stdin")
        elif self.default_store:
            text += (f"; Docker keeps credentials in the store {_q('docker-credential-' + self.default_store)}, "
                     "not in this file: use --username and --password-stdin")
        return text

    def __repr__(self) -> str:
        return f"RegistryCredentials({self.entries!r})"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _names(names: Iterable[str]) -> str:
    return ", ".join(_q(n) for n in names)


# --- matching an entry to the upstream ---------------------------------------------------------------
_API_VERSION_SEGMENT = re.compile(r"^v[0-9]+$")


def _strip_default_port(hostport: str, scheme: str) -> str:
    if hostport.endswith(":443") and scheme in ("", "https"):
        return hostport[:-4]
    if hostport.endswith(":80") and scheme == "http":
        return hostport[:-3]
    return hostport


def parse_registry(key: str) -> tuple[str, str, tuple[str, ...]]:
    """``(scheme, host[:port], path segments)`` of a registry key as users write them: ``quay.io``,
    ``https://index.docker.io/v1/``, ``registry.example.io:5000/org``. The host is lower-cased and a
    default port dropped."""
    rest = key.strip()
    scheme = ""
    if "://" in rest:
        scheme, rest = rest.split("://", 1)
        scheme = scheme.lower()
    hostport, _, path = rest.partition("/")
    hostport = _strip_default_port(hostport.lower(), scheme)
    return scheme, hostport, tuple(p for p in path.split("/") if p)


def _canonical_upstream(upstream: str) -> str:
    return _strip_default_port(upstream.strip().lower(), "")


def match_rank(registry: str, upstream: str) -> tuple[int, ...] | None:
    """How specifically the registry key ``registry`` names ``upstream``: None when it does not, else a
    tuple where smaller is more specific (see the module docstring)."""
    target = _canonical_upstream(upstream)
    is_hub = target in DOCKER_HUB_ALIASES
    if is_hub and registry == DOCKER_HUB_INDEX_KEY:
        return (0, 0)
    if registry == upstream:
        return (0, 1)
    scheme, host, segments = parse_registry(registry)
    if is_hub:
        if host not in DOCKER_HUB_ALIASES:
            return None
    elif host != target:
        return None
    if not segments:
        path_class, depth = 0, 0
    elif len(segments) == 1 and _API_VERSION_SEGMENT.fullmatch(segments[0]):
        path_class, depth = 1, 0
    else:
        path_class, depth = 2, len(segments)
    return (1, path_class, depth, int(host != target), int(bool(scheme)))


def upstream_matches(registry: str, upstream: str) -> bool:
    """Whether the registry key (or a KEP ``serverAddress``) names the upstream."""
    return match_rank(registry, upstream) is not None


# --- content rules, shared by every format -----------------------------------------------------------
def credential_problems(entry: RegistryEntry) -> list[str]:
    """Gardener's rules for the username and password an entry yields: both UTF-8 and non-empty, no whitespace
    in the username. (The ``_json_key`` service-account check needs a Secret's path: :func:`credential_errors`.)"""
    if entry.credentials is None:
        return [entry.problem or f"the entry {_q(entry.registry)} holds no credentials"]
    out = []
    username, password = entry.credentials.username, entry.credentials.password
    for text, where in ((username, entry.username_from), (password, entry.password_from)):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a JSON "\ud800" escape
            out.append(f"{where} is not valid UTF-8")
    if out:
        return out
    if not secrets.go_trim_space(username):
        out.append(f"{entry.username_from} is empty")
    if any(secrets.go_is_space(ch) for ch in username):
        out.append(f"{entry.username_from} contains whitespace")
    if not secrets.go_trim_space(password):
        out.append(f"{entry.password_from} is empty")
    return out


def service_account_problems(password: str, where: str) -> list[str]:
    """The ``_json_key`` check of :func:`api.secrets.validate_upstream_secret`, reused: the details, with
    ``where`` naming the Secret (and entry) the password came from."""
    return [e.detail for e in secrets.validate_service_account_json(password, Path(), "", where)]


# --- Docker config.json and .dockercfg ---------------------------------------------------------------
def _go_field(obj: dict[str, Any], name: str) -> Any:
    """A JSON object's field as Go's encoding/json finds it: the exact key, else any case-insensitive one."""
    if name in obj:
        return obj[name]
    lower = name.lower()
    for key, value in obj.items():
        if isinstance(key, str) and key.lower() == lower:
            return value
    return None


def load_json(data: bytes, what: str) -> Any:
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CredentialsError(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CredentialsError(f"{what} is not valid UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:  # where, not what: the message carries no part of the document
        raise CredentialsError(f"{what} is not valid JSON (line {exc.lineno} column {exc.colno})") from None


def _decode_auth(auth: str) -> tuple[str, str]:
    """``base64(username:password)``, padded or not (as the kubelet accepts it); raises ValueError with a
    phrase naming what is wrong."""
    compact = auth.replace("\r", "").replace("\n", "").strip()
    compact += "=" * (-len(compact) % 4)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("does not decode to UTF-8 text") from None
    username, sep, password = text.partition(":")
    if not sep:
        raise ValueError("does not decode to username:password (no ':')")
    return username, password


def docker_entry(registry: str, entry: Any) -> RegistryEntry:
    """One entry of a Docker auths map: ``auth`` | ``username``/``password`` | ``identitytoken``."""
    at = f"of the entry {_q(registry)}"
    if not isinstance(entry, dict):
        return RegistryEntry(registry, problem=f"the entry {_q(registry)} is not a JSON object")
    values: dict[str, str] = {}
    for name in ("auth", "username", "password", "identitytoken", "registrytoken"):
        value = _go_field(entry, name)
        if value is None:
            continue
        if not isinstance(value, str):
            return RegistryEntry(registry, problem=f"{_q(name)} {at} must be a string")
        values[name] = value
    username = password = None
    username_from, password_from = f'"username" {at}', f'"password" {at}'
    if values.get("auth"):
        try:
            username, password = _decode_auth(values["auth"])
        except ValueError as exc:
            return RegistryEntry(registry, problem=f'"auth" {at} {exc}; it must be base64(username:password)')
        username_from, password_from = f'the username in "auth" {at}', f'the password in "auth" {at}'
    else:
        username, password = values.get("username"), values.get("password")
    if values.get("identitytoken"):
        if not username:
            username = TOKEN_USERNAME
        return RegistryEntry(registry, Credentials(username, values["identitytoken"]),
                             username_from=username_from, password_from=f'"identitytoken" {at}')
    if username is None and password is None:
        if values.get("registrytoken"):
            return RegistryEntry(registry, problem=f'"registrytoken" {at} {REGISTRY_TOKEN_DETAIL}')
        return RegistryEntry(registry)  # e.g. `{}` when Docker keeps the credentials in a store
    if username is None:
        return RegistryEntry(registry, problem=f'the entry {_q(registry)} has a "password" but no "username"')
    if password is None:
        return RegistryEntry(registry, problem=f'the entry {_q(registry)} has a "username" but no "password"')
    return RegistryEntry(registry, Credentials(username, password),
                         username_from=username_from, password_from=password_from)


def _auths(auths: Any, what: str) -> tuple[RegistryEntry, ...]:
    if not isinstance(auths, dict):
        raise CredentialsError(f"{what} must be a JSON object of registry to credentials")
    return tuple(docker_entry(str(registry), entry) for registry, entry in auths.items())


def _looks_like_auths_map(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(v, dict) and any(_go_field(v, k) is not None for k in ("auth", "username", "identitytoken"))
        for v in obj.values())


def read_docker_config(data: bytes) -> RegistryCredentials:
    """Docker's ``config.json``, which is also a ``.dockerconfigjson``: ``{"auths": {REGISTRY: ENTRY}}``."""
    doc = load_json(data, "the document")
    if not isinstance(doc, dict):
        raise CredentialsError('the document must be a JSON object with an "auths" map')
    auths = _go_field(doc, "auths")
    if auths is None:
        if _looks_like_auths_map(doc):
            raise CredentialsError('the document has no "auths" map; its registries are at the top level, as in '
                                   'a legacy .dockercfg (use that format for it)')
        auths = {}
    entries = _auths(auths, 'the "auths" map')
    helpers = _go_field(doc, "credHelpers")
    store = _go_field(doc, "credsStore")
    return RegistryCredentials(
        entries,
        store_hint={str(k): v for k, v in helpers.items() if isinstance(v, str)} if isinstance(helpers, dict) else {},
        default_store=store if isinstance(store, str) and store else None)


def read_dockercfg(data: bytes) -> RegistryCredentials:
    """A legacy ``.dockercfg`` (``kubernetes.io/dockercfg``): the top level is the auths map."""
    doc = load_json(data, "the document")
    if isinstance(doc, dict) and isinstance(_go_field(doc, "auths"), dict) and \
            _looks_like_auths_map(_go_field(doc, "auths")):
        raise CredentialsError('the document has an "auths" map, as a config.json (.dockerconfigjson) has; '
                               'a .dockercfg has the registries at the top level')
    return RegistryCredentials(_auths(doc, "the document"))


# --- Secrets -----------------------------------------------------------------------------------------
def secret_format(secret: SecretData) -> str:
    """Which format a Secret is in: by its type, else by its keys; everything else is Gardener's opaque one
    (and :func:`api.secrets.validate_upstream_secret` says what is wrong with it)."""
    if secret.type == TYPE_DOCKERCONFIGJSON:
        return FORMAT_DOCKERCONFIGJSON
    if secret.type == TYPE_DOCKERCFG:
        return FORMAT_DOCKERCFG
    if secret.type == TYPE_REGCREDENTIALS:
        return FORMAT_KEP
    if is_credential_provider(secret):
        return FORMAT_CREDENTIAL_PROVIDER
    keys = set(secret.data)
    if DOCKERCONFIGJSON_KEY in keys:
        return FORMAT_DOCKERCONFIGJSON
    if DOCKERCFG_KEY in keys:
        return FORMAT_DOCKERCFG
    if keys & {KEP_SERVER_ADDRESS, KEP_IDENTITY_TOKEN, KEP_REGISTRY_TOKEN}:
        return FORMAT_KEP
    return FORMAT_OPAQUE


def _docker_secret(secret: SecretData, upstream: str, fmt: str) -> tuple[Credentials | None, list[str]]:
    key = _q(secret.key)
    data_key = DOCKERCONFIGJSON_KEY if fmt == FORMAT_DOCKERCONFIGJSON else DOCKERCFG_KEY
    where = f"the data entry {_q(data_key)} in the referenced secret {key}"
    details = []
    others = sorted(k for k in secret.data if k != data_key)
    if others:
        details.append(f"the referenced secret {key} should have only the data entry {_q(data_key)}, "
                       f"not also {_names(others)}")
    if data_key not in secret.data:
        return None, details + [f"missing {_q(data_key)} data entry in the referenced secret {key}"]
    reader = read_docker_config if fmt == FORMAT_DOCKERCONFIGJSON else read_dockercfg
    try:
        entry = reader(secret.data[data_key]).select(upstream)
    except CredentialsError as exc:
        return None, details + [f"{where}: {exc}"]
    details += [f"{where}: {p}" for p in credential_problems(entry)]
    if entry.credentials and entry.credentials.username == JSON_KEY_USERNAME:
        details += service_account_problems(entry.credentials.password,
                                            f"{key} ({_q(data_key)}, entry {_q(entry.registry)})")
    return (entry.credentials if not details else None), details


def _kep_secret(secret: SecretData, upstream: str) -> tuple[Credentials | None, list[str]]:
    key = _q(secret.key)
    where = f"the referenced secret {key}"
    details = []
    for extra in sorted(set(secret.data) - set(KEP_KEYS)):
        details.append(f"unexpected data entry {_q(extra)} in the referenced secret {key}: a registry credentials "
                       f"Secret has only {_names(KEP_KEYS)}")
    texts: dict[str, str] = {}
    for name in KEP_KEYS:
        if name in secret.data:
            try:
                texts[name] = secret.data[name].decode("utf-8")
            except UnicodeDecodeError:
                details.append(f'the data entry "{name}" in the referenced secret {key} is not valid UTF-8')

    def given(name: str) -> bool:
        return bool(secrets.go_trim_space(texts.get(name, "")))

    server = texts.get(KEP_SERVER_ADDRESS)
    if server is not None and not upstream_matches(server.strip(), upstream):
        details.append(f'the data entry "serverAddress" in the referenced secret {key} names the registry '
                       f"{_q(server.strip())}, not the upstream {_q(upstream)}")
    entry: RegistryEntry | None = None
    if given(KEP_IDENTITY_TOKEN):
        username_given = given(USERNAME_KEY)
        entry = RegistryEntry(upstream, Credentials(texts[USERNAME_KEY] if username_given else TOKEN_USERNAME,
                                                    texts[KEP_IDENTITY_TOKEN]),
                              username_from=f'the data entry "username" in {where}',
                              password_from=f'the data entry "identityToken" in {where}')
    elif USERNAME_KEY in secret.data or PASSWORD_KEY in secret.data:
        for name in (USERNAME_KEY, PASSWORD_KEY):
            if name not in secret.data:
                details.append(f'missing "{name}" data entry in the referenced secret {key}')
        if USERNAME_KEY in texts and PASSWORD_KEY in texts:
            entry = RegistryEntry(upstream, Credentials(texts[USERNAME_KEY], texts[PASSWORD_KEY]),
                                  username_from=f'the data entry "username" in {where}',
                                  password_from=f'the data entry "password" in {where}')
    elif given(KEP_REGISTRY_TOKEN):
        details.append(f'the data entry "registryToken" in the referenced secret {key} {REGISTRY_TOKEN_DETAIL}')
    else:
        details.append(f'the referenced secret {key} has no "username" and "password" (or "identityToken")')
    if entry is not None:
        details += credential_problems(entry)
        if entry.credentials and entry.credentials.username == JSON_KEY_USERNAME:
            details += service_account_problems(entry.credentials.password, key)
    return (entry.credentials if entry and not details else None), details


def _analyse(secret: SecretData, upstream: str) -> tuple[str, Credentials | None, list[str]]:
    fmt = secret_format(secret)
    if fmt in (FORMAT_DOCKERCONFIGJSON, FORMAT_DOCKERCFG):
        return (fmt, *_docker_secret(secret, upstream, fmt))
    if fmt == FORMAT_KEP:
        return (fmt, *_kep_secret(secret, upstream))
    return fmt, None, []


def credential_errors(secret: SecretData, upstream: str, path: Path, reference_name: str,
                      require_immutable: bool = True) -> list[FieldError]:
    """Everything wrong with ``secret`` as the credentials of the cache for ``upstream``, in any accepted
    format; ``field.invalid(path, reference_name, ...)`` errors naming the Secret and key, never a value.

    Gardener's opaque Secret gets exactly :func:`api.secrets.validate_upstream_secret`'s errors; the other
    formats the same immutability and content rules. ``require_immutable`` as there (False for gardenlet's
    ``ref-`` copy)."""
    if is_credential_provider(secret):
        return provider_errors(secret, path, reference_name, require_immutable=require_immutable)
    fmt, _, details = _analyse(secret, upstream)
    if fmt == FORMAT_OPAQUE:
        return validate_upstream_secret(secret, path, reference_name, require_immutable=require_immutable)
    if require_immutable and not secret.immutable:
        details = [f"the referenced secret {_q(secret.key)} should be immutable"] + details
    return [field.invalid(path, reference_name, d) for d in details]


def extract_credentials(secret: SecretData, upstream: str) -> Credentials:
    """The username and password the cache for ``upstream`` uses, from a Secret in any accepted format.
    Raises :class:`CredentialsError` (all problems, no values) when :func:`credential_errors` would report
    any other than immutability."""
    fmt, creds, details = _analyse(secret, upstream)
    if fmt == FORMAT_OPAQUE:
        errs = validate_upstream_secret(secret, Path(), "", require_immutable=False)
        if errs:
            raise CredentialsError("; ".join(e.detail for e in errs))
        return credentials_of(secret)
    if details or creds is None:
        raise CredentialsError("; ".join(details) or f"no credentials in the referenced secret {_q(secret.key)}")
    return creds


def upstream_auth(secret: SecretData, upstream: str) -> UpstreamAuth:
    """What the cache for ``upstream`` authenticates with: the credential provider plugin of a Secret of that
    type, else the username and password of :func:`extract_credentials`. Raises :class:`CredentialsError` (all
    problems, no values) when :func:`credential_errors` would report any other than immutability."""
    if is_credential_provider(secret):
        try:
            return read_provider(secret)
        except ValueError as exc:
            raise CredentialsError(str(exc)) from None
    return extract_credentials(secret, upstream)
