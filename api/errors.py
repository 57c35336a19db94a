"""The one base of every error registry-cache raises on purpose.

Each error says what is wrong and where (a field path, a file, an object); none carries a credential.
The command line maps them to its exit codes in one place (:mod:`extension.cli.main`).
"""


class RegistryCacheError(Exception):
    """Base of every error registry-cache raises on purpose."""
