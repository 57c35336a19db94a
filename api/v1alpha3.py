"""``registry.extensions.gardener.cloud/v1alpha3``: ``RegistryConfig`` and ``RegistryStatus``.

The models mirror the Go types of the Gardener extension field for field, camelCase on the wire. Decoding
is strict (unknown fields and wrong types are errors); fields that Go leaves at their zero value when they
are missing (``garbageCollection.ttl``, ``http.tls``, ``highAvailability.enabled``) get the same zero value
here, and :func:`set_defaults` applies Gardener's defaults (volume size 10Gi, ttl 168h, TLS on).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema

from api.duration import Duration, DurationError, parse_duration
from api.gostrings import go_trim_space
from api.quantity import Quantity, QuantityError, parse_quantity

GROUP: Final = "registry.extensions.gardener.cloud"
VERSION: Final = "v1alpha3"
API_VERSION: Final = "registry.extensions.gardener.cloud/v1alpha3"
KIND_CONFIG: Final = "RegistryConfig"
KIND_STATUS: Final = "RegistryStatus"

DEFAULT_VOLUME_SIZE = "10Gi"
DEFAULT_TTL = "168h"

QUANTITY_PATTERN = (  # Go trims surrounding whitespace first
    r"^\s*[+-]?[0-9]*(\.[0-9]*)?(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?\s*$"
)
DURATION_PATTERN = r"^[+-]?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h))+)$"


def _to_quantity(value: Any) -> Quantity:
    if isinstance(value, Quantity):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a quantity such as \"10Gi\", got {type(value).__name__}")
    text = go_trim_space(value) if isinstance(value, str) else repr(value)  # as Quantity.UnmarshalJSON
    try:
        return parse_quantity(text)
    except QuantityError as exc:
        raise ValueError(str(exc)) from None


def _to_duration(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    if value is None:  # Go: metav1.Duration reads null as "" and fails to parse it
        raise ValueError('time: invalid duration ""')
    if not isinstance(value, str):
        raise ValueError(f"expected a duration string such as \"168h\", got {type(value).__name__}")
    try:
        return Duration(parse_duration(value))
    except DurationError as exc:
        raise ValueError(str(exc)) from None


QuantityField = Annotated[
    Quantity,
    PlainValidator(_to_quantity),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({
        "anyOf": [{"type": "string", "minLength": 1, "pattern": QUANTITY_PATTERN}, {"type": "number"}],
        "description": "A Kubernetes quantity, e.g. 10Gi, 500Mi, 1e9.",
    }),
]

DurationField = Annotated[
    Duration,
    PlainValidator(_to_duration),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({
        "type": "string", "pattern": DURATION_PATTERN,
        "description": "A Go duration, e.g. 168h, 1h30m, 0s.",
    }),
]


def _zero(default: Any, wire: Any) -> BeforeValidator:
    """Go leaves a JSON null of a non-pointer field at its zero value: the wire accepts ``wire`` (null
    included, as the JSON Schema says), the decoded field always holds a value."""
    return BeforeValidator(lambda v: default if v is None else v, json_schema_input_type=wire)


def _caches(value: Any) -> Any:
    """``caches``: null is no caches, a null entry is a cache with every field at its zero value (as Go)."""
    if value is None:
        return []
    return [{} if c is None else c for c in value] if isinstance(value, list) else value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True, frozen=True)

    def to_wire(self) -> dict[str, Any]:
        """The object as it is written to the API: camelCase, no null fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Volume(_Model):
    size: QuantityField | None = Field(None, description="Size of the cache volume. Defaults to 10Gi. Immutable.")
    storage_class_name: str | None = Field(
        None, alias="storageClassName",
        description="StorageClass of the cache volume; the cluster default when unset. Immutable.")


class GarbageCollection(_Model):
    ttl: DurationField = Field(
        default_factory=lambda: Duration(0),
        description="How long a cached image is kept; 0s disables garbage collection for good. "
                    "When garbageCollection is not set at all, 168h.")


class Proxy(_Model):
    http_proxy: str | None = Field(None, alias="httpProxy", description="HTTP_PROXY of the cache.")
    https_proxy: str | None = Field(None, alias="httpsProxy", description="HTTPS_PROXY of the cache.")


class HTTP(_Model):
    tls: Annotated[bool, _zero(False, bool | None)] = Field(
        False, description="Serve the cache over HTTPS. When http is not set at all, TLS is on.")


class HighAvailability(_Model):
    enabled: Annotated[bool, _zero(False, bool | None)] = Field(False, description="Run the cache with two replicas.")


class RegistryCache(_Model):
    upstream: Annotated[str, _zero("", str | None)] = Field(
        "", description="The upstream registry host[:port], e.g. docker.io; no scheme. Required.")
    remote_url: str | None = Field(
        None, alias="remoteURL",
        description="URL of the upstream; https://<upstream> by default, https://registry-1.docker.io for docker.io.")
    volume: Volume | None = None
    garbage_collection: GarbageCollection | None = Field(None, alias="garbageCollection")
    secret_reference_name: str | None = Field(
        None, alias="secretReferenceName",
        description="Name of an entry in the Shoot's spec.resources that points to the credentials Secret.")
    proxy: Proxy | None = None
    http: HTTP | None = None
    high_availability: HighAvailability | None = Field(None, alias="highAvailability")
    service_name_suffix: str | None = Field(
        None, alias="serviceNameSuffix",
        description="Name the cache's Service registry-<suffix> instead of after the upstream.")


class RegistryConfig(_Model):
    api_version: Literal["registry.extensions.gardener.cloud/v1alpha3"] = Field(alias="apiVersion")
    # Go's decoder takes a missing kind from the target type when the apiVersion is right
    kind: Annotated[Literal["RegistryConfig"], _zero(KIND_CONFIG, Literal["RegistryConfig"] | None)] = KIND_CONFIG
    caches: Annotated[list[RegistryCache],
                      BeforeValidator(_caches, json_schema_input_type=list[RegistryCache | None] | None)] = Field(
        default_factory=list, description="One cache per upstream; at least one.")


class RegistryCacheStatus(_Model):
    upstream: str
    endpoint: str
    remote_url: str = Field(alias="remoteURL")


class RegistryStatus(_Model):
    api_version: Literal["registry.extensions.gardener.cloud/v1alpha3"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["RegistryStatus"] = KIND_STATUS
    caches: list[RegistryCacheStatus] = Field(default_factory=list)
    ca_secret_name: str | None = Field(None, alias="caSecretName")


def set_defaults(config: RegistryConfig) -> RegistryConfig:
    """Gardener's ``SetDefaults_RegistryCache`` for every cache; returns a new object."""
    caches = []
    for cache in config.caches:
        update: dict[str, Any] = {}
        if cache.volume is None or cache.volume.size is None:
            volume = cache.volume or Volume()
            update["volume"] = volume.model_copy(update={"size": parse_quantity(DEFAULT_VOLUME_SIZE)})
        if cache.garbage_collection is None:
            update["garbage_collection"] = GarbageCollection(ttl=Duration(parse_duration(DEFAULT_TTL)))
        if cache.http is None:
            update["http"] = HTTP(tls=True)
        caches.append(cache.model_copy(update=update))
    return config.model_copy(update={"caches": caches})
