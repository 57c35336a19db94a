"""Which Shoots reach the Shoot webhooks: Gardener labels Shoots per extension type, so a Shoot that uses only
registry-mirror must be selected as one that uses registry-cache is, and a Shoot labelled for both only once
(the mutating webhook would otherwise check its Secrets twice). The API server's label selector semantics,
evaluated here; tests/integration/test_webhooks.py and test_mirror.py run them on a real API server."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from extension.webhook.server import USES_EXTENSION, configuration, mutating_configuration, shoot_selections

CACHE = "extensions.extensions.gardener.cloud/registry-cache"
MIRROR = "extensions.extensions.gardener.cloud/registry-mirror"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """metav1.LabelSelector as the API server evaluates an objectSelector."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


LABELLINGS = [dict(pair) for pair in itertools.product(*[[(k, v) for v in (None, "true", "false")]
                                                         for k in (CACHE, MIRROR)])]


@pytest.mark.parametrize("standalone", [False, True])
@pytest.mark.parametrize("labels", [{k: v for k, v in labels.items() if v is not None} for labels in LABELLINGS],
                         ids=str)
def test_a_shoot_labelled_for_either_type_reaches_exactly_one_entry(standalone, labels):
    matching = [prefix for prefix, selection in shoot_selections(standalone)
                if selects(selection["objectSelector"], labels)]
    labelled = "true" in (labels.get(CACHE), labels.get(MIRROR))
    if labelled:
        assert len(matching) == 1, matching
        assert "matchConditions" not in dict(shoot_selections(standalone))[matching[0]]  # every such Shoot
    else:
        # not labelled (yet): only standalone's entry for new Shoots, and only when spec.extensions enable one
        assert matching == (["new-"] if standalone else [])


def test_a_registry_mirror_only_shoot_is_selected_in_garden_and_standalone_mode():
    for standalone in (False, True):
        [(prefix, _)] = [(p, s) for p, s in shoot_selections(standalone)
                         if selects(s["objectSelector"], {MIRROR: "true"})]
        assert prefix == "mirror-"
    hooks = configuration("PEM", lambda hook: {"url": f"https://x/{hook}"}, standalone=True)["webhooks"]
    names = [w["name"] for w in hooks]
    assert names[:3] == ["shoots.registry-cache.extensions.gardener.cloud",
                         "mirror-shoots.registry-cache.extensions.gardener.cloud",
                         "new-shoots.registry-cache.extensions.gardener.cloud"]
    mutating = mutating_configuration("PEM", lambda hook: {"url": f"https://x/{hook}"})["webhooks"]
    assert [w["name"] for w in mutating] == [
        "operatingsystemconfigs.registry-cache.extensions.gardener.cloud",
        "operatingsystemconfigs.registry-mirror.extensions.gardener.cloud"]


def test_the_new_shoots_condition_names_both_types():
    assert "e.type in ['registry-cache', 'registry-mirror']" in USES_EXTENSION
