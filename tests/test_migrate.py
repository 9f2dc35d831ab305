"""Copying logs: `router migrate` SQLite -> PostgreSQL -> SQLite keeps every chain
identical and verified, and a migrate killed midway resumes and finishes; `router backup`
copies a live SQLite log and verifies it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from router import SqliteStore, open_store
from router.cli import main
from router.core.protocols import Fence
from router.store.testing import sealed_run

RUNS = 10_000


def hashes(db: Path) -> list[tuple[str, int, bytes]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT run_id, seq, hash FROM events ORDER BY run_id, seq").fetchall()


async def a_log(path: Path) -> None:
    async with SqliteStore.open(path, "group") as store:
        for i in range(RUNS):
            status = ("active", "ended", "waiting")[i % 3]
            fence = Fence("app", 0, 60, True, status)
            await store.append(sealed_run(f"run-{i:05d}", 1 + i % 4), fence=fence)


async def run_summaries(location: str) -> dict[str, str]:
    async with open_store(location) as store:
        return {s.run_id: s.status for s in await store.runs()}


def test_migrate_sqlite_to_postgres_and_back_with_a_kill_midway(
    postgres: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, back = tmp_path / "source.db", tmp_path / "back.db"
    anyio.run(a_log, source)
    cli = [sys.executable, "-m", "router.cli", "migrate", str(source), postgres, "--progress"]
    proc = subprocess.Popen(cli, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:  # kill it once it is well under way
        if line.startswith("2000/"):
            proc.kill()
            break
    proc.wait()
    proc.stderr.close()
    copied = len(anyio.run(run_summaries, postgres))
    assert 2000 <= copied < RUNS  # interrupted midway
    assert main(["migrate", str(source), postgres]) == 0  # resumes and finishes
    assert main(["migrate", postgres, str(back)]) == 0
    assert hashes(back) == hashes(source)
    statuses = anyio.run(run_summaries, str(back))
    assert statuses["run-00001"] == "ended" and statuses["run-00002"] == "waiting"
    capsys.readouterr()
    # Every chain verifies; what verify reports is the statuses this synthetic log gave runs
    # whose events are still going: a status that hides a live run from workers.
    assert main(["verify", "--db", postgres]) == 1
    failures = [line for line in capsys.readouterr().err.splitlines() if line.startswith("FAIL")]
    assert len(failures) == sum(i % 3 != 0 for i in range(RUNS))
    assert all("its lease says" in line for line in failures)


async def small_log(path: Path) -> None:
    async with SqliteStore.open(path) as store:
        for i in range(20):
            await store.append(sealed_run(f"r{i}", 3))


def test_backup_copies_a_log_and_verifies_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "log.db"
    anyio.run(small_log, source)
    assert main(["backup", str(tmp_path / "copy.db"), "--db", str(source)]) == 0
    assert "20 run(s), 60 event(s)" in capsys.readouterr().out
    assert hashes(tmp_path / "copy.db") == hashes(source)
    assert main(["backup", str(tmp_path / "copy.db"), "--db", str(source)]) == 1  # not over a file
