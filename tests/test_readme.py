"""The README stays true: its commands are the ones CI runs, its example runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second() -> None:
    demo, tests = blocks("sh")[:2]
    assert "router demo" in demo and "pytest" in tests
    assert README.index(demo) < README.index("## What router is")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests.strip() in ci


def test_the_embedding_example_runs(tmp_path: Path) -> None:
    example = blocks("python")[0]  # the embedding example; later blocks are fragments
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done Customer 42 is on enterprise."


def test_the_audit_query_runs_on_an_export_of_the_demo(tmp_path: Path) -> None:
    import pytest

    duckdb = pytest.importorskip("duckdb")
    (sql,) = blocks("sql")
    run = [sys.executable, "-m", "router"]
    subprocess.run([*run, "demo"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run(
        [*run, "export", "--out", "runs.parquet"], cwd=tmp_path, check=True, capture_output=True
    )
    rows = (
        duckdb.connect()
        .execute(sql.replace("'runs.parquet'", f"'{tmp_path / 'runs.parquet'}'"))
        .fetchall()
    )
    by_tool = {tool: (calls, ok) for tool, calls, ok, _ in rows}
    assert by_tool == {"calculate": (4, 3), "lookup_customer": (1, 1), "issue_refund": (1, 0)}


def test_every_error_code_is_explained() -> None:
    import inspect

    import router.errors as errors

    codes = {
        cls.code
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.RouterError) and cls is not errors.RouterError
    }
    assert {code for code in codes if f"| `{code}` |" not in README} == set()
