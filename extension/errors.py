"""Errors of the controller and its components, reported on the Extension (``status.lastError``)."""

from __future__ import annotations

from api.errors import RegistryCacheError
from extension.constants import ERR_CONFIGURATION_PROBLEM


class ReconcileError(RegistryCacheError):
    """A failure to report on the Extension: ``codes`` are Gardener error codes."""

    def __init__(self, message: str, codes: list[str] | None = None):
        super().__init__(message)
        self.codes = codes or []


class ConfigurationError(ReconcileError):
    """The providerConfig, a referenced Secret or the shoot's objects stand in the way: the user must act."""

    def __init__(self, message: str):
        super().__init__(message, [ERR_CONFIGURATION_PROBLEM])


class WouldWrite(Exception):
    """A dry run (is everything as delivered?) came to a write it would have to make: ``what`` names it."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what
