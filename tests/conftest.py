"""Tiers: tests under tests/unit are marked ``unit``, tests/integration ``integration``, tests/e2e ``e2e``."""

from pathlib import Path

import pytest

_TIERS = {"unit", "integration", "e2e"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).relative_to(Path(__file__).parent).parts[0]
        if tier in _TIERS:
            item.add_marker(getattr(pytest.mark, tier))
