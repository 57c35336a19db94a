"""extension/runtime/jsondecode.py: what the API server may store (nesting up to 10,000 levels) never makes a decode
raise RecursionError, a List keeps every item but the one nested too deep, and nothing else changes."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extension.runtime.jsondecode import MAX_DEPTH, TooDeep, decode_event, decode_list, decode_object, depth, loads

# strings that look like JSON structure (brackets, quotes, backslashes) must not count as structure
_strings = st.text(alphabet=st.sampled_from('{}[]"\\:,ab é\n\u2028'), max_size=8)
_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _strings,
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_strings, inner, max_size=4),
                     max_leaves=30)


def reference_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    return 0


def nested(levels: int, leaf: str = "1") -> str:
    """An object nested ``levels`` deep as text (json.dumps itself would recurse)."""
    return '{"a":' * (levels - 1) + "{" + '"a":' + leaf + "}" * levels if levels else leaf


def shoot_text(name: str, levels: int) -> str:
    """A Shoot whose own nesting is ``levels`` (its spec.provider.deep holds the rest)."""
    head = json.dumps({"apiVersion": "core.gardener.cloud/v1beta1", "kind": "Shoot", "metadata": {
        "name": name, "namespace": "garden-x", "uid": f"u-{name}", "resourceVersion": "7",
        "annotations": {"k": 'v [{"x"}'}}})
    return head[:-1] + ', "spec": {"provider": {"type": "local", "deep": ' + nested(levels - 3) + "}}}"


@settings(max_examples=300, deadline=None)
@given(_json, st.booleans())
def test_depth_is_the_nesting_of_the_value(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert depth(text) == depth(text.encode()) == reference_depth(value)
    assert loads(text, MAX_DEPTH) == (json.loads(text), set())


def test_depth_of_what_the_api_server_takes():
    assert depth(nested(10_000)) == 10_000
    assert depth('"[[[{{{"') == 0 and depth('["\\\\", "\\"[", []]') == 2
    assert depth(shoot_text("x", 300)) == 300


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 3_000, 10_000])
def test_a_list_keeps_every_item_but_the_one_nested_too_deep(levels):
    items = [shoot_text("a", 5), shoot_text("deep", levels), shoot_text("b", MAX_DEPTH)]
    text = '{"apiVersion":"core.gardener.cloud/v1beta1","kind":"ShootList","metadata":{"resourceVersion":"9"},' \
           '"items":[' + ",".join(items) + "]}"
    if levels > 1_000:
        with pytest.raises(RecursionError):
            json.loads(text)  # what the controller did before
    value, dropped = decode_list(text)
    assert [i["metadata"]["name"] for i in value["items"]] == ["a", "b"]
    assert value["items"][1] == json.loads(shoot_text("b", MAX_DEPTH))  # at the limit: whole
    assert value["metadata"] == {"resourceVersion": "9"}
    [skeleton] = dropped
    assert skeleton["metadata"] == {"name": "deep", "namespace": "garden-x", "uid": "u-deep", "resourceVersion": "7",
                                    "annotations": {"k": 'v [{"x"}'}}


def test_one_object_and_a_watch_event():
    assert decode_object(shoot_text("ok", MAX_DEPTH)) == (json.loads(shoot_text("ok", MAX_DEPTH)), False)
    skeleton, deep = decode_object(shoot_text("deep", 3_000).encode())
    assert deep and skeleton["metadata"]["name"] == "deep" and skeleton["kind"] == "Shoot"
    event, deep = decode_event('{"type":"MODIFIED","object":' + shoot_text("deep", MAX_DEPTH + 1) + "}")
    assert deep and event["type"] == "MODIFIED" and event["object"]["metadata"]["uid"] == "u-deep"
    event, deep = decode_event('{"type":"ADDED","object":' + shoot_text("ok", MAX_DEPTH) + "}")
    assert not deep and event["object"] == json.loads(shoot_text("ok", MAX_DEPTH))


def test_a_list_nested_too_deep_outside_its_items_is_refused_whole():
    with pytest.raises(TooDeep):
        decode_list('{"kind":"ShootList","metadata":' + nested(MAX_DEPTH + 5) + ',"items":[]}')


def test_not_json_stays_an_error():
    with pytest.raises(ValueError):
        decode_object(b"<html>" + b"[" * 600)
    with pytest.raises(ValueError):
        decode_object(b"not json")
