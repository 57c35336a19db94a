"""Print a pip constraints file pinning every dependency of pyproject.toml (runtime and the test extra) to its
floor: `>=X` becomes `==X`. pip has no --resolution=lowest-direct; this is the same for the direct ones.

    python .ci/lowest-constraints.py > lowest.txt && pip install -c lowest.txt -e '.[test]'
"""

import re
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
requirements = project["dependencies"] + project["optional-dependencies"]["test"]
for requirement in requirements:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)(,.*)?", requirement)
    if match is None:
        sys.exit(f"{requirement!r}: every dependency needs a floor (>=X) to be tested at")
    print(f"{match.group(1)}=={match.group(2)}")
