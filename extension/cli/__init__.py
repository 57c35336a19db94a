"""``registry-cache``: the command line (one entry point, :func:`extension.cli.main.main`)."""

from extension.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
