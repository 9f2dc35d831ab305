"""Chaos: four worker processes share one log (PostgreSQL, or one SQLite file) and a chaos
loop SIGKILLs one at random and starts another, until every run has ended. Then every run
ended exactly once, its chain verifies, and the external ledger shows that no charge (a
tool that is not idempotent) ran twice. And fencing: a worker frozen (SIGSTOP) past its
lease, whose runs another worker took over, writes nothing once it wakes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from chaos_app import CHARGES, definitions, ledger

from router import Principal, Runtime, open_store, resolve_call
from router.core.chain import verify
from router.core.events import GraphStarted
from router.core.protocols import Store
from router.run.log import fold_run, load_run

pytestmark = pytest.mark.anyio
HERE = Path(__file__).parent
USER = Principal(id="u")
TTL = "1.0"


class Workers:
    """The worker processes, by owner name."""

    def __init__(self, location: str, ledger_path: str) -> None:
        self.location, self.ledger_path = location, ledger_path
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.started = 0

    def spawn(self, *, freeze: bool = False) -> str:
        owner = f"worker-{self.started}"
        self.started += 1
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "chaos_worker.py"), self.location, self.ledger_path]
            + [owner, TTL],
            cwd=HERE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "CHAOS_FREEZE": "1" if freeze else ""},
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.procs[owner] = proc
        return owner

    def kill(self, owner: str) -> None:
        proc = self.procs.pop(owner)
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait(timeout=60)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()


async def submit(store: Store, ledger_path: str, agents: int, graphs: int) -> list[str]:
    """Runs recorded for the workers, none driven here."""
    runtime = Runtime(store, owner="service")
    cashier, counter = definitions(runtime, ledger_path)
    for i in range(agents):
        await cashier.start("charge me", principal=USER, run_id=f"a{i}", drive=False)
    for i in range(graphs):
        await counter.start({"n": 0}, principal=USER, run_id=f"g{i}", drive=False)
    return [f"a{i}" for i in range(agents)] + [f"g{i}" for i in range(graphs)]


async def settle_interrupted(store: Store, ledger_path: str) -> None:
    """What an operator does for a charge whose worker died mid-call: the ledger says
    whether it ran (supply its result) or not (run it again)."""
    book = ledger(ledger_path)
    try:
        for summary in await store.runs():
            if summary.status != "waiting":
                continue
            _, state, _ = await load_run(store, summary.run_id)
            for c in state.calls:
                if c.status != "interrupted":
                    continue
                ran = book.execute(
                    "SELECT 1 FROM ledger WHERE run_id = ? AND call_id = ?",
                    (summary.run_id, c.call.id),
                ).fetchone()
                decision = "supply" if ran else "retry"
                await resolve_call(
                    store,
                    summary.run_id,
                    c.call.id,
                    decision,
                    result="charged" if ran else None,
                    by="operator",
                )
    finally:
        book.close()


async def all_ended(store: Store, count: int) -> bool:
    statuses = [s.status for s in await store.runs()]
    return len(statuses) == count and all(s == "ended" for s in statuses)


async def check_outcome(store: Store, ledger_path: str, run_ids: list[str]) -> None:
    for run_id in run_ids:
        stored = await store.read(run_id)
        assert verify(stored) == len(stored)  # seq 0..n-1, no gap, no repeat, chained
        events, state, _ = await load_run(store, run_id)
        assert fold_run(events).phase == "done", (run_id, fold_run(events).reason)
        ends = [e for e in stored if e.kind in ("run_failed", "run_cancelled", "limit_exceeded")]
        assert ends == []
        if not isinstance(events[0], GraphStarted):
            assert state.output == f"charged {CHARGES} times"
    book = ledger(ledger_path)
    rows = book.execute(
        "SELECT run_id, call_id, count(*) FROM ledger GROUP BY run_id, call_id"
    ).fetchall()
    book.close()
    assert [r for r in rows if r[2] != 1] == []  # no charge ran twice
    agents = [r for r in run_ids if r.startswith("a")]
    assert len(rows) == CHARGES * len(agents)  # and every charge ran


async def chaos(location: str, tmp_path: Path, agents: int, graphs: int) -> int:
    ledger_path = str(tmp_path / "ledger.db")
    ledger(ledger_path).close()
    async with open_store(location) as store:
        run_ids = await submit(store, ledger_path, agents, graphs)
        workers = Workers(location, ledger_path)
        rng = random.Random(20261201)
        kills = 0
        try:
            for _ in range(4):
                workers.spawn()
            with anyio.fail_after(900):
                while not await all_ended(store, len(run_ids)):
                    await settle_interrupted(store, ledger_path)
                    await anyio.sleep(1.0)  # the chaos loop's beat; nothing asserts on time
                    workers.kill(rng.choice(sorted(workers.procs)))
                    kills += 1
                    workers.spawn()
        finally:
            workers.stop_all()
        await check_outcome(store, ledger_path, run_ids)
    return kills


async def test_chaos_on_postgres(postgres: str, tmp_path: Path) -> None:
    assert await chaos(postgres, tmp_path, agents=400, graphs=100) > 0


async def test_chaos_on_one_sqlite_file(tmp_path: Path) -> None:
    assert await chaos(str(tmp_path / "log.db"), tmp_path, agents=120, graphs=40) > 0


async def test_a_frozen_worker_is_fenced_when_it_wakes(postgres: str, tmp_path: Path) -> None:
    ledger_path = str(tmp_path / "ledger.db")
    ledger(ledger_path).close()
    async with open_store(postgres) as store:
        run_ids = await submit(store, ledger_path, agents=60, graphs=0)
        workers = Workers(postgres, ledger_path)
        frozen = workers.spawn(freeze=True)  # it freezes itself mid-run (see chaos_app)
        proc = workers.procs[frozen]
        try:
            with anyio.fail_after(120):
                while Path(f"/proc/{proc.pid}/stat").read_text().split()[2] != "T":
                    await anyio.sleep(0.01)
            workers.spawn()  # takes its runs over once their leases lapse
            with anyio.fail_after(300):
                while not await all_ended(store, len(run_ids)):
                    await settle_interrupted(store, ledger_path)
                    await anyio.sleep(0.05)
            proc.send_signal(signal.SIGCONT)
            assert proc.stdout is not None
            with anyio.fail_after(120):  # it wakes, and finds its runs taken over
                line = ""
                while "took it over" not in line:
                    line = await anyio.to_thread.run_sync(
                        proc.stdout.readline, abandon_on_cancel=True
                    )
                    assert line, "the frozen worker ended without noticing"
        finally:
            workers.stop_all()
        await check_outcome(store, ledger_path, run_ids)  # none of its late appends landed
