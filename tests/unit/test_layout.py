"""The package layout: no import cycles among the modules of ``api/`` and ``extension/``, the runtime layer in a
room of its own (``extension/runtime/``: imports nothing of the product), and nothing left at the old places.

Read from the source (every ``import`` statement, those under ``TYPE_CHECKING`` and inside functions too), so a
cycle is found whether or not Python would trip over it at import time."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME_MAY_IMPORT = {"extension.constants"}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted([*REPO.glob("api/**/*.py"), *REPO.glob("extension/**/*.py")]):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that ``name`` imports. ``from pkg import sub`` imports ``pkg.sub``, not ``pkg``'s
    other members (importing a submodule of one's own package is no cycle)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{prefix}.{alias.name}"
                found.add(sub if sub in known else prefix)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_runtime_imports_nothing_of_the_product():
    edges = graph()
    runtime = [m for m in edges if m == "extension.runtime" or m.startswith("extension.runtime.")]
    assert {"extension.runtime.kube", "extension.runtime.informer", "extension.runtime.workqueue",
            "extension.runtime.leader", "extension.runtime.retry", "extension.runtime.jsondecode",
            "extension.runtime.metrics"} <= set(runtime)
    for module in runtime:
        outside = {m for m in edges[module] if not m.startswith("extension.runtime")} - RUNTIME_MAY_IMPORT
        assert not outside, f"{module} imports {sorted(outside)}"


def test_nothing_left_at_the_old_places():
    for name in ("kube", "informer", "workqueue", "leader", "retry", "jsondecode"):
        assert not (REPO / "extension" / f"{name}.py").exists()


# --- packaging: what the runtime needs -------------------------------------------------------------------------

def test_the_product_runs_without_jsonschema():
    """jsonschema is a test dependency (tests/unit/test_schema.py checks the committed JSON Schema with it): every
    module of the product imports without it."""
    import subprocess
    import sys

    code = ("import importlib, pkgutil, sys\n"
            "sys.modules['jsonschema'] = None  # import jsonschema raises ImportError\n"
            "import api, extension\n"
            "for package in (api, extension):\n"
            "    for m in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):\n"
            "        if not m.name.endswith('__main__'):\n"
            "            importlib.import_module(m.name)\n"
            "from extension.cli.main import main\n"
            "print('imported')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "imported", done.stderr[-2000:]


def test_jsonschema_is_only_a_test_dependency():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("jsonschema")]
    assert [d for d in project["optional-dependencies"]["test"] if d.startswith("jsonschema")]


def test_every_package_is_in_the_wheel():
    """pyproject.toml lists the product's packages, local/pyproject.toml local-up's (extension.local, and folders
    of the repository mapped into it): a package missing there is missing in the wheels and the image (the front
    once was)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    listed = {package for pyproject in ("pyproject.toml", "local/pyproject.toml")
              for package in tomllib.loads((root / pyproject).read_text())["tool"]["setuptools"]["packages"]}
    found = {".".join(p.parent.relative_to(root).parts) for top in ("api", "extension")
             for p in (root / top).rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found - listed == set(), f"packages not in pyproject.toml: {sorted(found - listed)}"
