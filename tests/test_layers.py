"""The direction of imports is the architecture: a test keeps it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "router"

# Core layers, left to right. A core module imports only from its own layer or the left.
LAYERS = {
    "errors": 0, "events": 0, "chain": 0, "clock": 0, "fingerprint": 0,
    "pattern": 1, "fsm": 1, "limits": 1, "access": 1, "protocols": 1, "transcript": 1, "timeline": 1, "report": 1,
    "redaction": 1, "graph_fsm": 1, "stored": 1, "effects": 1,
    "schema_assertions": 2, "schema_applicators": 2, "schema_types": 2, "schema": 2, "tools": 2, "definition": 2, "replay": 2,
    "run": 3,
    "graph": 4, "agents": 5,
}
EDGE = {"store", "models", "export", "observe", "crypto", "testing", "cli", "demo", "conformance", "mcp", "mcp_http", "__init__", "__main__"}
ALLOWED_THIRD_PARTY = {"msgspec", "anyio", "orjson", "uvloop", "aiosqlite", "pyarrow"}
EXTRAS = {
    "observe.otel": {"opentelemetry"}, "crypto": {"cryptography"},
    "models.http": {"httpx"}, "models.openai": {"httpx"}, "models.anthropic": {"httpx"}, "mcp_http": {"httpx"},
}  # optional extras, imported lazily


def modules() -> list[tuple[str, Path]]:
    return [(str(p.relative_to(ROOT).with_suffix("")).replace("/", "."), p) for p in sorted(ROOT.rglob("*.py"))]


def imports(path: Path, name: str) -> list[tuple[str, str]]:
    """(router module or '', top-level package) for each import in a file."""
    package = name.rsplit(".", 1)[0] if "." in name else ""
    out: list[tuple[str, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                out.append((alias.name.split(".", 1)[1] if top == "router" else "", top))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
                target = ".".join([*base, node.module] if node.module else base)
                out.append((target or (node.names[0].name), "router"))
            elif node.module:
                top = node.module.split(".")[0]
                out.append((node.module.split(".", 1)[1] if top == "router" else "", top))
    return out


@pytest.mark.parametrize(("name", "path"), modules(), ids=[n for n, _ in modules()])
def test_imports_point_left(name: str, path: Path) -> None:
    top = name.split(".")[0]
    for target, package in imports(path, name):
        if package != "router":
            stdlib = package in sys.stdlib_module_names or package == "__future__"
            test_only = name == "testing" and package in {"pytest", "hypothesis"}  # the conformance suite
            extra = package in EXTRAS.get(name, set())
            assert stdlib or test_only or extra or package in ALLOWED_THIRD_PARTY, f"{name} imports {package}"
            if package == "aiosqlite":
                assert name == "store.sqlite", f"{name} imports aiosqlite: only the SQLite store may"
            continue
        target_top = target.split(".")[0]
        if top in EDGE:
            continue  # adapters may use the core and one another
        assert target_top not in EDGE, f"core module {name} imports the adapter {target}"
        assert LAYERS[target_top] <= LAYERS[top], f"{name} (layer {LAYERS[top]}) imports {target} (layer {LAYERS[target_top]})"


def test_every_module_has_a_place() -> None:
    for name, _ in modules():
        assert name.split(".")[0] in LAYERS or name.split(".")[0] in EDGE, f"{name} has no layer"


def test_the_core_does_not_load_optional_packages_at_start_up() -> None:
    code = "import sys, router; bad = {'pyarrow', 'numpy', 'httpx', 'asyncpg'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_type_checks_strictly() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", "/tmp/router-mypy-cache"],
        cwd=ROOT.parent, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
