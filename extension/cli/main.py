"""``registry-cache``: the one entry point of the command line, and its one table of exit codes.

Each command is registered by its module (``add_parser``) and either returns an :class:`ExitCode` or raises;
:func:`main` maps what it raises to the exit code, in this one place:

==== ========================================================================================================
code meaning
==== ========================================================================================================
0    success (also: the Shoot does not enable the extension, nothing to validate or render; said on stderr)
1    the Shoot is invalid (one error per line on stdout, field path first), or the command failed (an API
     server refused, a rotation could not finish: the message says what was kept)
2    an input cannot be used (no such file, not YAML, not a Shoot, a bad option) or a wrong command line
130  interrupted
==== ========================================================================================================
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable, Sequence

from api.field import ValidationFailed
from extension.cli import credentials, local, nodeagent, offline, rotate, run
from extension.cli.errors import CommandFailed, InputError


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    INTERRUPTED = 130


EXIT_CODES = ("Exit 0 done; 1 the Shoot is invalid (one error per line, field path first) or the command failed; "
              "2 an input cannot be used.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-cache",
        description="Pull-through registry caches for Gardener shoots: validate, render, run.",
        epilog=EXIT_CODES)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    offline.add_parsers(sub, EXIT_CODES)
    run.add_parser(sub)
    local.add_parser(sub)
    rotate.add_parser(credentials.add_parser(sub))
    nodeagent.add_parser(sub)
    return parser


def _error(message: str) -> None:
    for line in message.splitlines() or [""]:
        print(f"error: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, *, checkpoint: Callable[[str], None] | None = None) -> int:
    """Run one command; ``checkpoint`` is a test seam handed to ``run`` (see the actuator)."""
    from extension.runtime.kube import ApiError

    args = build_parser().parse_args(argv)
    try:
        if args.func is run.cmd_run:
            return int(run.cmd_run(args, checkpoint))
        return int(args.func(args))
    except InputError as exc:
        _error(str(exc))
        return ExitCode.USAGE
    except ValidationFailed as exc:
        for err in exc.errors:
            print(str(err))
        return ExitCode.FAILED
    except CommandFailed as exc:
        _error(str(exc))
        return ExitCode.FAILED
    except ApiError as exc:  # also TransportError: the API server could not be reached
        _error(exc.describe())
        return ExitCode.FAILED
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
