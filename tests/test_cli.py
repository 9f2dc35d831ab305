"""The router command, used as an operator would."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def router(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "router", *args], cwd=cwd, capture_output=True, text=True
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    cwd = tmp_path_factory.mktemp("demo")
    out = router("demo", cwd=cwd).stdout
    run_id = re.search(r"^run (run_\w+)", out, re.M)
    assert run_id, out
    return cwd, run_id.group(1), out


def test_demo_shows_tool_calls_a_corrected_rejection_and_a_denial(
    demo: tuple[Path, str, str],
) -> None:
    _, _, out = demo
    assert out.count("tool ok") >= 3
    rejected = out.index("REJECTED      calculate")
    assert "invalid_arguments at $.expr" in out[rejected:].splitlines()[0]
    assert "tool ok       calculate" in out[rejected:]  # the model corrected the call
    assert "DENIED        issue_refund" in out and "lacks refunds:write" in out
    assert "=> done" in out and "cost $" in out


def test_the_demo_log_verifies_and_refuses_edits(demo: tuple[Path, str, str]) -> None:
    cwd, run_id, _ = demo
    assert "every hash chain verifies" in router("verify", cwd=cwd).stdout
    conn = sqlite3.connect(cwd / "router.db")
    for sql in (
        "UPDATE events SET payload = x'00' WHERE seq = 1",
        "DELETE FROM events WHERE seq = 3",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()


def test_runs_and_show(demo: tuple[Path, str, str]) -> None:
    cwd, run_id, _ = demo
    assert run_id in router("runs", cwd=cwd).stdout
    shown = router("show", run_id, cwd=cwd).stdout
    assert "step 6" in shown and "DENIED" in shown and "tokens" in shown
    missing = router("show", "run_nope", cwd=cwd, check=False)
    assert missing.returncode == 1 and "run_not_found" in missing.stderr


def test_decide_refuses_a_run_that_is_not_interrupted(demo: tuple[Path, str, str]) -> None:
    cwd, run_id, _ = demo
    result = router("decide", run_id, "call_1_0", "retry", cwd=cwd, check=False)
    assert (
        result.returncode == 1
        and "decision_error" in result.stderr
        and "not interrupted" in result.stderr
    )
    bad = router("decide", run_id, "call_1_0", "supply", "--result", "{nope", cwd=cwd, check=False)
    assert bad.returncode != 0 and "not JSON" in bad.stderr


def test_verify_names_the_first_broken_link(tmp_path: Path) -> None:
    router("demo", "--db", "log.db", cwd=tmp_path)
    conn = sqlite3.connect(tmp_path / "log.db")
    conn.execute("DROP TRIGGER events_refuse_update")  # an attacker with file access
    conn.execute(
        "UPDATE events SET payload = CAST(REPLACE(CAST(payload AS TEXT), '1050', '9999') AS BLOB) "
        "WHERE seq = 8"
    )
    conn.commit()
    conn.close()
    result = router("verify", "--db", "log.db", cwd=tmp_path, check=False)
    assert result.returncode == 1
    assert "log_not_intact" in result.stderr and "seq 8" in result.stderr


def test_fsm_prints_a_mermaid_diagram(tmp_path: Path) -> None:
    out = router("fsm", cwd=tmp_path).stdout
    assert (
        out.startswith("stateDiagram-v2")
        and "awaiting_model --> running_tools: model_responded" in out
    )


def test_bad_input_gets_a_clear_error(tmp_path: Path) -> None:
    missing = router("runs", "--db", "nope.db", cwd=tmp_path, check=False)
    assert missing.returncode == 2 and "router: store_error: no log at nope.db" in missing.stderr
    (tmp_path / "junk.db").write_bytes(b"junk" * 1000)
    junk = router("runs", "--db", "junk.db", cwd=tmp_path, check=False)
    assert junk.returncode == 1 and "not_a_log" in junk.stderr


def test_unlease_breaks_a_dead_owners_lease(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import anyio

    from router import LeaseHeld, SqliteStore
    from router.cli import main

    db = str(tmp_path / "log.db")

    async def hold() -> None:
        async with SqliteStore.open(db) as store:
            await store.acquire_lease("r", "dead", 600)

    async def take() -> None:
        async with SqliteStore.open(db) as store:
            await store.acquire_lease("r", "alive", 60)

    anyio.run(hold)
    with pytest.raises(LeaseHeld, match="'dead'.*router unlease r"):
        anyio.run(take)
    assert main(["unlease", "r", "--db", db]) == 0
    assert "broken" in capsys.readouterr().out
    anyio.run(take)


def test_the_memory_demo_fits_a_long_run_and_recalls_a_note_in_the_next(tmp_path: Path) -> None:
    out = router("demo", "memory", cwd=tmp_path).stdout
    first, second = out.split("\nrun ")[0], out.split("\nrun ")[1]
    assert "summarised    for step" in first and "results cut" in first
    assert "answer capped at 500" in first and "remember [" in first
    assert "recalled      for step 1 from principal:agent-7" in second
    assert "From our notes: Customer 42 (Grace Hopper) was charged 1,200.00 twice" in second
    shown = router("show", re.findall(r"^run (run_\w+)", out, re.M)[0], cwd=tmp_path).stdout
    assert "summarised" in shown and "sent " in shown
    assert "2 run(s)" in router("verify", cwd=tmp_path).stdout  # the memory's tables aside
