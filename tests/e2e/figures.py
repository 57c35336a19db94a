"""Figures the e2e tests measure, printed in pytest's terminal summary (``tests/e2e/conftest.py``): the data
path's (``FIGURES``) and the scenarios' on a cluster (``CLUSTER_FIGURES``, ``CLUSTER_TIMINGS``: the one-node
cluster's start and stop, the failover pulls)."""

from __future__ import annotations

FIGURES: list[str] = []
CLUSTER_FIGURES: list[str] = []
CLUSTER_TIMINGS: dict[str, float] = {}


def report(line: str) -> None:
    FIGURES.append(line)
