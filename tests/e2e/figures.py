"""Figures the data-path tests measure, printed in pytest's terminal summary (``tests/e2e/conftest.py``)."""

from __future__ import annotations

FIGURES: list[str] = []


def report(line: str) -> None:
    FIGURES.append(line)
