"""``registry-cache run``, ended abruptly at a checkpoint: ``python -m tests.integration.crash_at POINT ARGS...``.

A test seam for the restart tests, outside the product: the controller is the real one (the same ``main``
as ``registry-cache``); the actuator calls ``checkpoint`` at fixed points and this one ends the process with
exit code 3 at POINT, as a crash (or ``kill -9``) would.
"""

import os
import sys

from extension.cli.main import main


def _crash_at(point: str):
    def checkpoint(here: str) -> None:
        if here == point:
            print(f"crash_at: ending the process at {here}", file=sys.stderr, flush=True)
            os._exit(3)
    return checkpoint


if __name__ == "__main__":
    sys.exit(main(sys.argv[2:], checkpoint=_crash_at(sys.argv[1])))
