"""``registry-cache run``, slowed down at a checkpoint: ``python -m tests.integration.slow_at POINT SECONDS FLAG
ARGS...``.

A test seam for the shutdown tests, outside the product (as crash_at.py): the controller is the real one; the
actuator calls ``checkpoint`` at fixed points, and at POINT, while the file FLAG exists, this one removes it and
sleeps SECONDS: one operation in flight takes that much longer, when a test asks for it.
"""

import os
import sys
import time

from extension.cli.main import main


def _slow_at(point: str, seconds: float, flag: str):
    def checkpoint(here: str) -> None:
        if here == point and os.path.exists(flag):
            os.remove(flag)
            print(f"slow_at: sleeping {seconds}s at {here}", file=sys.stderr, flush=True)
            time.sleep(seconds)
            print(f"slow_at: awake at {here}", file=sys.stderr, flush=True)
    return checkpoint


if __name__ == "__main__":
    sys.exit(main(sys.argv[4:], checkpoint=_slow_at(sys.argv[1], float(sys.argv[2]), sys.argv[3])))
