"""The committed JSON Schema is current, and jsonschema agrees with the models on the structural rules."""

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.decode import decode_registry_config
from api.field import ValidationFailed
from api.mirror_validation import decode_mirror_config
from api.schema import (
    MIRROR_SCHEMA_PATH,
    SCHEMA_PATH,
    mirror_config_schema,
    registry_config_schema,
    render,
    render_mirror,
)

from .helpers import PC, config


def test_committed_schema_is_current():
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render(), \
        "api/schema/registryconfig-v1alpha3.json is stale: run `python -m api.schema --write`"


VALIDATOR = jsonschema.Draft202012Validator(registry_config_schema())


def both(doc):
    schema_ok = VALIDATOR.is_valid(doc)
    try:
        decode_registry_config(doc, PC)
        model_ok = True
    except ValidationFailed:
        model_ok = False
    return schema_ok, model_ok


@pytest.mark.parametrize("doc", [
    config({"upstream": "docker.io"}),
    config({"upstream": "a", "volume": {"size": "1.5Gi"}, "garbageCollection": {"ttl": "1h30m"}}),
    config({"upstream": "a", "volume": {"size": 1024}}),
    config({"upstream": "a", "volume": {"size": "1Gx"}}),
    config({"upstream": "a", "volume": {"size": ""}}),
    config({"upstream": "a", "volume": {"size": True}}),
    config({"upstream": "a", "garbageCollection": {"ttl": "7d"}}),
    config({"upstream": "a", "garbageCollection": {"ttl": 5}}),
    config({"upstream": "a", "garbageCollection": {"ttl": "0"}}),
    config({"upstream": 1}),
    config({"remoteURL": "https://x"}),
    config({"upstream": "a", "extra": 1}),
    config({"upstream": "a", "http": {"tls": "yes"}}),
    config({"upstream": "a", "proxy": None, "volume": None}),
    {**config(), "kind": "MirrorConfig"},
    {"kind": "RegistryConfig", "caches": []},
    {**config(), "caches": "x"},
    {**config(), "unknown": 1},
])
def test_schema_and_models_agree(doc):
    schema_ok, model_ok = both(doc)
    assert schema_ok == model_ok


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(
    ["", "a.io", "10Gi", "1.5Gi", "1e9", "0", "-1", "1Gx", "168h", "0s", "1h30m", ".5h", "7d", "1", "x", "Gi"]))
FIELDS = st.sampled_from(["upstream", "remoteURL", "volume", "garbageCollection", "secretReferenceName", "proxy",
                          "http", "highAvailability", "serviceNameSuffix", "bogus"])
SUB = {"volume": ["size", "storageClassName", "bogus"], "garbageCollection": ["ttl", "bogus"],
       "proxy": ["httpProxy", "httpsProxy", "bogus"], "http": ["tls", "bogus"], "highAvailability": ["enabled", "bogus"]}


@st.composite
def caches(draw):
    cache = {}
    for name in draw(st.lists(FIELDS, max_size=5, unique=True)):
        if name in SUB and draw(st.booleans()):
            cache[name] = {k: draw(SCALARS) for k in draw(st.lists(st.sampled_from(SUB[name]), max_size=2, unique=True))}
        else:
            cache[name] = draw(SCALARS)
    return cache


@settings(max_examples=300, deadline=None)
@given(st.lists(caches(), max_size=3))
def test_schema_and_models_agree_on_generated_documents(items):
    schema_ok, model_ok = both(config(*items))
    assert schema_ok == model_ok, json.dumps(items)


# --- MirrorConfig ------------------------------------------------------------------------------------------

MIRROR_VALIDATOR = jsonschema.Draft202012Validator(mirror_config_schema())
MIRROR_API = "mirror.extensions.gardener.cloud/v1alpha1"


def test_committed_mirror_schema_is_current():
    assert MIRROR_SCHEMA_PATH.read_text(encoding="utf-8") == render_mirror(), \
        "api/schema/mirrorconfig-v1alpha1.json is stale: run `python -m api.schema --write`"


def mirror_both(doc):
    try:
        decode_mirror_config(doc, PC)
        model_ok = True
    except ValidationFailed:
        model_ok = False
    return MIRROR_VALIDATOR.is_valid(doc), model_ok


MIRROR_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 2),
                           st.sampled_from(["", "docker.io", "https://m.io", "pull", "resolve", "x"]))
HOST_FIELDS = st.sampled_from(["host", "capabilities", "caBundleSecretReferenceName", "overridePath", "bogus"])


@st.composite
def mirror_hosts(draw):
    host = {}
    for name in draw(st.lists(HOST_FIELDS, max_size=4, unique=True)):
        host[name] = draw(st.lists(MIRROR_SCALARS, max_size=2)) if name == "capabilities" and draw(st.booleans()) \
            else draw(MIRROR_SCALARS)
    return host


@st.composite
def mirrors(draw):
    mirror = {}
    for name in draw(st.lists(st.sampled_from(["upstream", "hosts", "bogus"]), max_size=3, unique=True)):
        mirror[name] = draw(st.lists(st.one_of(mirror_hosts(), st.none()), max_size=2)) if name == "hosts" and \
            draw(st.booleans()) else draw(MIRROR_SCALARS)
    return mirror


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(st.one_of(mirrors(), st.none()), max_size=3), st.none(), MIRROR_SCALARS))
def test_mirror_schema_and_models_agree_on_generated_documents(items):
    schema_ok, model_ok = mirror_both({"apiVersion": MIRROR_API, "kind": "MirrorConfig", "mirrors": items})
    assert schema_ok == model_ok, json.dumps(items)
