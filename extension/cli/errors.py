"""What makes a command end early; :func:`extension.cli.main.main` maps each to its exit code."""

from __future__ import annotations

from api.errors import RegistryCacheError


class InputError(RegistryCacheError):
    """An input that cannot be used (exit 2): not readable, not YAML, not the kind of object expected, a wrong
    option. The message names the file or option and what was expected, never a credential."""


class CommandFailed(RegistryCacheError):
    """The command could not do what was asked (exit 1); the message says what happened and what was kept."""
