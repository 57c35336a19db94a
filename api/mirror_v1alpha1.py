"""``mirror.extensions.gardener.cloud/v1alpha1``: ``MirrorConfig``, the providerConfig of ``registry-mirror``.

The models mirror the Go types of the Gardener extension (``pkg/apis/mirror/v1alpha1``) field for field,
camelCase on the wire. Decoding is strict (unknown fields and wrong types are errors); what Go leaves at its
zero value for a JSON null (a string, a list entry, a whole mirror or host) gets the same zero value here, and
:func:`set_defaults` applies Gardener's one default (``capabilities: ["pull"]`` when none are given).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import BeforeValidator, Field

from api.v1alpha3 import _Model, _zero

GROUP: Final = "mirror.extensions.gardener.cloud"
VERSION: Final = "v1alpha1"
API_VERSION: Final = "mirror.extensions.gardener.cloud/v1alpha1"
KIND_CONFIG: Final = "MirrorConfig"

CAPABILITY_PULL: Final = "pull"
CAPABILITY_RESOLVE: Final = "resolve"
CAPABILITIES: Final = (CAPABILITY_PULL, CAPABILITY_RESOLVE)
DEFAULT_CAPABILITIES: Final = (CAPABILITY_PULL,)


def _entries(zero: Any, wire: Any) -> BeforeValidator:
    """A list field: null is the empty list, a null entry is the entry's zero value (as Go decodes it); the wire
    (and the JSON Schema) accepts ``wire``."""

    def convert(value: Any) -> Any:
        if value is None:
            return []
        return [zero() if v is None else v for v in value] if isinstance(value, list) else value

    return BeforeValidator(convert, json_schema_input_type=wire)


class MirrorHost(_Model):
    host: Annotated[str, _zero("", str | None)] = Field(
        "", description="The mirror: an http(s) URL, a path allowed (without '.' or '..' segments). Required.")
    capabilities: Annotated[list[str], _entries(str, list[str | None] | None)] = Field(
        default_factory=list,
        description='What the mirror may be trusted with: "pull" and/or "resolve". Defaults to ["pull"].')
    ca_bundle_secret_reference_name: str | None = Field(
        None, alias="caBundleSecretReferenceName",
        description="Name of an entry in the Shoot's spec.resources that points to an immutable Secret with the "
                    "PEM CA bundle (key bundle.crt) the mirror's TLS certificate is checked against.")
    override_path: bool | None = Field(
        None, alias="overridePath",
        description="containerd's override_path: the host URL already holds the API root (no /v2 appended).")


class MirrorConfiguration(_Model):
    upstream: Annotated[str, _zero("", str | None)] = Field(
        "", description="The upstream registry host[:port], e.g. docker.io; no scheme. Required.")
    hosts: Annotated[list[MirrorHost], _entries(dict, list[MirrorHost | None] | None)] = Field(
        default_factory=list, description="The mirrors of the upstream, tried in order; at least one.")


class MirrorConfig(_Model):
    api_version: Literal["mirror.extensions.gardener.cloud/v1alpha1"] = Field(alias="apiVersion")
    # Go's decoder takes a missing kind from the target type when the apiVersion is right
    kind: Annotated[Literal["MirrorConfig"], _zero(KIND_CONFIG, Literal["MirrorConfig"] | None)] = KIND_CONFIG
    mirrors: Annotated[list[MirrorConfiguration], _entries(dict, list[MirrorConfiguration | None] | None)] = Field(
        default_factory=list, description="One entry per upstream; at least one.")


def set_defaults(config: MirrorConfig) -> MirrorConfig:
    """Gardener's ``SetDefaults_MirrorHost`` for every host; returns a new object."""
    mirrors = []
    for mirror in config.mirrors:
        hosts = [h if h.capabilities else h.model_copy(update={"capabilities": list(DEFAULT_CAPABILITIES)})
                 for h in mirror.hosts]
        mirrors.append(mirror.model_copy(update={"hosts": hosts}))
    return config.model_copy(update={"mirrors": mirrors})
