"""The committed JSON Schema is current, and jsonschema agrees with the models on the structural rules."""

import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.decode import decode_registry_config
from api.field import ValidationFailed
from api.schema import SCHEMA_PATH, registry_config_schema, render

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
